// The real Node SDKs against the proxy: one JSON line per case, read by tests/sdk/test_node_sdks.py.
// Env: PROXY_URL, TOKEN (allowed everywhere), SCOPED_TOKEN (allowed on no route these cases use),
// UPSTREAM_HOST (host:port of the fake upstream, which no reply may name).
import OpenAI from "openai";
import Anthropic from "@anthropic-ai/sdk";
import { APICallError, generateText, jsonSchema, streamText, tool } from "ai";
import { createOpenAI } from "@ai-sdk/openai";
import { createAnthropic } from "@ai-sdk/anthropic";
import { createGoogleGenerativeAI } from "@ai-sdk/google";
import { GoogleGenAI } from "@google/genai";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

// Warnings go to stdout, which carries the results.
globalThis.AI_SDK_LOG_WARNINGS = false;

const proxy = process.env.PROXY_URL;
const token = process.env.TOKEN;
const scopedToken = process.env.SCOPED_TOKEN;
const messages = [{ role: "user", content: "hi" }];
// A tool the mock upstream calls with arguments made from its schema: {city: "mock", unit: "celsius"}.
const tools = {
  get_weather: tool({
    description: "The weather in a city",
    inputSchema: jsonSchema({
      type: "object",
      properties: { city: { type: "string" }, unit: { type: "string", enum: ["celsius", "fahrenheit"] } },
      required: ["city"],
      additionalProperties: false,
    }),
  }),
};

function report(name, result) {
  process.stdout.write(JSON.stringify({ name, ...result }) + "\n");
}

async function run(name, fn) {
  try {
    report(name, { ok: true, value: await fn() });
  } catch (error) {
    report(name, {
      ok: false,
      errorClass: error?.constructor?.name,
      status: error?.status ?? error?.statusCode,
      message: String(error?.message ?? error).slice(0, 300),
    });
  }
}

// Each SDK's error path: the proxy's 401 and 403, the upstream's 429 and 500.
const failures = [
  ["401", { key: "llmp_not-a-real-token-000000000000", headers: {} }],
  ["403", { key: scopedToken, headers: {} }],
  ["429", { key: token, headers: { "x-mock-status": "429" } }],
  ["500", { key: token, headers: { "x-mock-status": "500" } }],
];

const openai = (key) => new OpenAI({ baseURL: `${proxy}/openai/v1`, apiKey: key, maxRetries: 0 });
const anthropic = (key) => new Anthropic({ baseURL: `${proxy}/anthropic`, apiKey: key, maxRetries: 0 });
const aiOpenAI = (key) => createOpenAI({ baseURL: `${proxy}/openai/v1`, apiKey: key });
const aiAnthropic = (key) => createAnthropic({ baseURL: `${proxy}/anthropic/v1`, apiKey: key });
// Its key goes in x-goog-api-key, to /models/{model}:generateContent (and
// :streamGenerateContent?alt=sse).
const aiGoogle = (key) => createGoogleGenerativeAI({ baseURL: `${proxy}/gemini/v1beta`, apiKey: key });
const gemini = (key) => new GoogleGenAI({ apiKey: key, httpOptions: { baseUrl: `${proxy}/gemini` } });

await run("openai.chat", async () => {
  const reply = await openai(token).chat.completions.create({ model: "gpt-test", messages });
  return reply.choices[0].message.content;
});
await run("openai.stream", async () => {
  const stream = await openai(token).chat.completions.create({ model: "gpt-test", messages, stream: true });
  const pieces = [];
  for await (const chunk of stream) {
    const text = chunk.choices[0]?.delta?.content;
    if (text) pieces.push(text);
  }
  return pieces.length;
});
for (const [status, { key, headers }] of failures) {
  await run(`openai.error.${status}`, () =>
    openai(key).chat.completions.create({ model: "gpt-test", messages }, { headers }),
  );
}

await run("anthropic.create", async () => {
  const reply = await anthropic(token).messages.create({ model: "claude-test", max_tokens: 20, messages });
  return reply.content[0].text;
});
await run("anthropic.stream", async () => {
  const stream = await anthropic(token).messages.create({
    model: "claude-test", max_tokens: 20, messages, stream: true,
  });
  let deltas = 0;
  for await (const event of stream) if (event.type === "content_block_delta") deltas += 1;
  return deltas;
});
for (const [status, { key, headers }] of failures) {
  await run(`anthropic.error.${status}`, () =>
    anthropic(key).messages.create({ model: "claude-test", max_tokens: 20, messages }, { headers }),
  );
}

await run("openai.responses", async () => {
  const reply = await openai(token).responses.create({ model: "gpt-test", input: "hi" });
  return { text: reply.output_text, usage: reply.usage };
});
await run("openai.responses.stream", async () => {
  const stream = await openai(token).responses.create({ model: "gpt-test", input: "hi", stream: true });
  let deltas = 0;
  let usage;
  for await (const event of stream) {
    if (event.type === "response.output_text.delta") deltas += 1;
    if (event.type === "response.completed") usage = event.response.usage;
  }
  return { deltas, usage };
});

for (const [label, provider, model] of [
  ["openai", aiOpenAI, (p) => p.chat("gpt-test")],
  // The AI SDK's default for OpenAI: the Responses API.
  ["openai.responses", aiOpenAI, (p) => p("gpt-test")],
  ["anthropic", aiAnthropic, (p) => p("claude-test")],
  ["google", aiGoogle, (p) => p("gemini-test")],
]) {
  await run(`ai.${label}.generateText`, async () => {
    const { text } = await generateText({ model: model(provider(token)), prompt: "hi", maxRetries: 0 });
    return text;
  });
  await run(`ai.${label}.streamText`, async () => {
    const result = streamText({ model: model(provider(token)), prompt: "hi", maxRetries: 0 });
    let pieces = 0;
    for await (const part of result.textStream) if (part) pieces += 1;
    return pieces;
  });
  await run(`ai.${label}.usage`, async () => {
    const { usage } = await generateText({ model: model(provider(token)), prompt: "hi there", maxRetries: 0 });
    const streamed = streamText({ model: model(provider(token)), prompt: "hi there", maxRetries: 0 });
    for await (const _ of streamed.textStream);
    return { generate: usage, stream: await streamed.usage };
  });
  await run(`ai.${label}.tool`, async () => {
    const calls = (list) => list.map((call) => ({ name: call.toolName, input: call.input }));
    const { toolCalls } = await generateText({ model: model(provider(token)), prompt: "weather?", tools, maxRetries: 0 });
    const streamed = streamText({ model: model(provider(token)), prompt: "weather?", tools, maxRetries: 0 });
    return { generate: calls(toolCalls), stream: calls(await streamed.toolCalls) };
  });
  for (const [status, { key, headers }] of failures) {
    await run(`ai.${label}.error.${status}`, async () => {
      try {
        await generateText({ model: model(provider(key)), prompt: "hi", maxRetries: 0, headers });
      } catch (error) {
        // The AI SDK's own error type for a failed provider call.
        if (APICallError.isInstance(error)) {
          error.status = error.statusCode;
          Object.defineProperty(error, "constructor", { value: { name: "APICallError" } });
        }
        throw error;
      }
    });
  }
}

await run("gemini.generate", async () => {
  const reply = await gemini(token).models.generateContent({ model: "gemini-test", contents: "hi" });
  return reply.text;
});
await run("gemini.stream", async () => {
  const stream = await gemini(token).models.generateContentStream({ model: "gemini-test", contents: "hi" });
  let pieces = 0;
  for await (const chunk of stream) if (chunk.text) pieces += 1;
  return pieces;
});
for (const [status, { key, headers }] of failures) {
  await run(`gemini.error.${status}`, () =>
    gemini(key).models.generateContent({ model: "gemini-test", contents: "hi", config: { httpOptions: { headers } } }),
  );
}

// Gemini's resumable upload of a 5 MB file; every reply the SDK read is kept, to show that
// none names the upstream's host.
await run("gemini.files.upload", async () => {
  const seen = [];
  const realFetch = globalThis.fetch;
  globalThis.fetch = async (input, init) => {
    const response = await realFetch(input, init);
    seen.push(String(response.status));
    response.headers.forEach((value, name) => seen.push(`${name}: ${value}`));
    seen.push(await response.clone().text());
    return response;
  };
  try {
    const data = randomBytes(5 * 1024 * 1024);
    const file = join(mkdtempSync(join(tmpdir(), "genai-upload-")), "report.bin");
    writeFileSync(file, data);
    const ai = new GoogleGenAI({ apiKey: token, httpOptions: { baseUrl: `${proxy}/gemini` } });
    const uploaded = await ai.files.upload({ file, config: { mimeType: "application/pdf", displayName: "r" } });
    return {
      name: uploaded.name,
      sizeBytes: uploaded.sizeBytes,
      mimeType: uploaded.mimeType,
      sha256: createHash("sha256").update(data).digest("hex"),
      uploadUrls: seen.filter((line) => line.startsWith("x-goog-upload-url: ")),
      upstreamHostSeen: seen.some((item) => item.includes(process.env.UPSTREAM_HOST)),
      replies: seen.filter((line) => /^[0-9]{3}$/.test(line)).length,
    };
  } finally {
    globalThis.fetch = realFetch;
  }
});

// The Vercel AI SDK (@ai-sdk/openai) and the openai Node SDK through MODEL_ROUTES: one base
// URL, several providers' models. One JSON line per case, read by tests/proxy/test_model_routes_other_sdks.py.
// Env: PROXY_URL, TOKEN.
import OpenAI from "openai";
import { generateText, jsonSchema, streamText, tool } from "ai";
import { createOpenAI } from "@ai-sdk/openai";

globalThis.AI_SDK_LOG_WARNINGS = false;

const proxy = process.env.PROXY_URL;
const token = process.env.TOKEN;
const messages = [{ role: "user", content: "hi" }];
const tools = {
  get_weather: tool({
    description: "The weather in a city",
    inputSchema: jsonSchema({
      type: "object",
      properties: { city: { type: "string" } },
      required: ["city"],
      additionalProperties: false,
    }),
  }),
};

async function run(name, fn) {
  try {
    process.stdout.write(JSON.stringify({ name, ok: true, value: await fn() }) + "\n");
  } catch (error) {
    process.stdout.write(
      JSON.stringify({ name, ok: false, message: String(error?.message ?? error).slice(0, 300) }) + "\n",
    );
  }
}

const ai = createOpenAI({ baseURL: `${proxy}/v1`, apiKey: token });
const openai = new OpenAI({ baseURL: `${proxy}/v1`, apiKey: token, maxRetries: 0 });

for (const model of ["claude-haiku-4-5", "gemini-2.5-flash", "deepseek-chat"]) {
  await run(`ai.generate.${model}`, async () => {
    const { text, response } = await generateText({ model: ai.chat(model), messages });
    return { text, model: response.modelId, header: response.headers?.["x-proxy-model"] };
  });
  await run(`ai.stream.${model}`, async () => {
    const result = streamText({ model: ai.chat(model), messages });
    let text = "";
    for await (const piece of result.textStream) text += piece;
    return { text, usage: (await result.usage).outputTokens };
  });
  await run(`ai.tools.${model}`, async () => {
    const { toolCalls } = await generateText({
      model: ai.chat(model),
      messages,
      tools,
      toolChoice: { type: "tool", toolName: "get_weather" },
    });
    return toolCalls.map((call) => call.toolName);
  });
}
await run("ai.fallback", async () => {
  const { text, response } = await generateText({
    model: ai.chat("gpt-4o"),
    messages,
    headers: { "x-mock-fail-models": "gpt-4o" },
  });
  return { text, model: response.modelId, header: response.headers?.["x-proxy-model"] };
});
await run("openai.models", async () => {
  const ids = [];
  for await (const model of openai.models.list()) ids.push(model.id);
  return ids.sort();
});

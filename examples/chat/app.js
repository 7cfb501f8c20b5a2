// A chat box that streams from llm-proxy's OpenAI-compatible endpoint. Plain JS, no build.
// Settings come from the URL: ?proxy=https://proxy.example.com&model=gpt-4o-mini#token=...
// (the token sits in the fragment, which browsers never send to a server).
"use strict";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const fragment = new URLSearchParams(location.hash.slice(1));
$("proxy").value = params.get("proxy") || location.origin;
$("model").value = params.get("model") || $("model").value;
$("token").value = fragment.get("token") || "";

const history = [];

function addMessage(role, text) {
  const div = document.createElement("div");
  div.className = `msg ${role}`;
  div.textContent = text;
  $("log").appendChild(div);
  return div;
}

function showStatus(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

// What a person should read for each refusal, with the proxy's own message after it.
async function describeError(response) {
  let message = "";
  try {
    const body = await response.json();
    message = (body.error && body.error.message) || body.message || "";
  } catch (_) {
    message = response.statusText;
  }
  const retry = response.headers.get("retry-after");
  switch (response.status) {
    case 401: return `Not signed in (401): ${message}`;
    case 403: return `Not allowed (403): ${message}`;
    case 429: return `Too many requests (429): ${message}` + (retry ? ` Retry after ${retry} s.` : "");
    case 400: return `Request refused (400): ${message}`;
    default: return `Error ${response.status}: ${message}`;
  }
}

// Reads an SSE body and calls onText for each content delta, as the bytes arrive.
async function readStream(body, onText) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    const lines = buffer.split("\n");
    buffer = lines.pop();
    for (const line of lines) {
      if (!line.startsWith("data:")) continue;
      const data = line.slice(5).trim();
      if (data === "[DONE]") return;
      const event = JSON.parse(data);
      const delta = event.choices && event.choices[0] && event.choices[0].delta;
      if (delta && delta.content) onText(delta.content);
    }
  }
}

// The caller's own budget, from the proxy's /proxy/usage (same credential as the chat).
async function showQuota() {
  const proxy = $("proxy").value.replace(/\/+$/, "");
  const token = $("token").value.trim();
  try {
    const response = await fetch(`${proxy}/proxy/usage`, {
      headers: token ? { Authorization: `Bearer ${token}` } : {},
    });
    if (!response.ok) return;
    const usage = await response.json();
    if (usage.limit_usd === null || usage.limit_usd === undefined) return;
    $("quota").textContent =
      `Budget left today: $${usage.remaining_usd.toFixed(4)} of $${usage.limit_usd} ` +
      `(${usage.input_tokens} tokens in, ${usage.output_tokens} out)`;
    $("quota").hidden = false;
  } catch (_) {
    // No quota to show: an older proxy, or a network error the chat will report itself.
  }
}

async function send(prompt) {
  const proxy = $("proxy").value.replace(/\/+$/, "");
  const token = $("token").value.trim();
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  history.push({ role: "user", content: prompt });
  addMessage("user", prompt);
  showStatus("Waiting for the model…", false);

  let response;
  try {
    response = await fetch(`${proxy}/v1/chat/completions`, {
      method: "POST",
      headers,
      body: JSON.stringify({
        model: $("model").value,
        stream: true,
        max_tokens: 256,
        messages: history,
      }),
    });
  } catch (err) {
    // The browser hides why; the usual cause is a proxy that does not list this page.
    history.pop();
    showStatus(
      `Could not reach the proxy: network error, or this page's origin (${location.origin}) ` +
      "is not in the proxy's ALLOWED_ORIGINS.", true);
    return;
  }
  if (!response.ok) {
    history.pop();
    showStatus(await describeError(response), true);
    return;
  }
  const bubble = addMessage("assistant", "");
  bubble.dataset.state = "streaming";
  showStatus("", false);
  try {
    await readStream(response.body, (text) => { bubble.textContent += text; });
    history.push({ role: "assistant", content: bubble.textContent });
  } catch (err) {
    showStatus(`The stream broke: ${err.message}`, true);
  }
  bubble.dataset.state = "done";
  await showQuota();
}

showQuota();

$("ask").addEventListener("submit", async (event) => {
  event.preventDefault();
  const prompt = $("prompt").value.trim();
  if (!prompt) return;
  $("prompt").value = "";
  $("send").disabled = true;
  try {
    await send(prompt);
  } finally {
    $("send").disabled = false;
  }
});

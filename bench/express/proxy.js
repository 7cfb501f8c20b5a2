// The seed recipe's proxy, as a baseline: express + global fetch + a reader loop.
// Run: UPSTREAM=http://127.0.0.1:N node proxy.js PORT
const express = require("express");

const upstream = process.env.UPSTREAM || "http://127.0.0.1:8788";
const app = express();
app.use(express.json({ limit: "1mb" }));

app.get("/health", (req, res) => res.send("ok"));

app.post("/v1/chat/completions", async (req, res) => {
  const response = await fetch(`${upstream}/v1/chat/completions`, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      authorization: `Bearer ${process.env.UPSTREAM_API_KEY || ""}`,
    },
    body: JSON.stringify(req.body),
  });
  res.status(response.status);
  res.setHeader("content-type", response.headers.get("content-type") || "text/event-stream");
  res.setHeader("cache-control", "no-cache");
  const reader = response.body.getReader();
  while (true) {
    const { done, value } = await reader.read();
    if (done) break;
    res.write(value);
  }
  res.end();
});

app.listen(Number(process.argv[2] || 3000), "127.0.0.1");

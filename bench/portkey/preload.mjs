// Portkey's gateway 1.15.2 on Node 20 edits the headers of the Response fetch() returned,
// which Node's undici makes immutable: every stream fails with "TypeError: immutable"
// (Portkey-AI/gateway#1389). Re-wrapping each response (the same body stream, mutable
// headers) lets it stream; nothing is buffered or copied.
const upstreamFetch = globalThis.fetch;
globalThis.fetch = async (...args) => {
  const response = await upstreamFetch(...args);
  return new Response(response.body, {
    status: response.status,
    statusText: response.statusText,
    headers: new Headers(response.headers),
  });
};

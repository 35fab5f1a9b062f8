// Talking to the dashboard service: JSON requests and the live Server-Sent Events stream.
// The session cookie (set by /api/login when API keys are on) rides along on both.

export class ApiError extends Error {
  constructor(status, message, details) {
    super(message);
    this.status = status;
    this.details = details || [];
  }
}

let unauthorized = () => {};
export const onUnauthorized = (handler) => { unauthorized = handler; };

export async function request(path, { method = "GET", body } = {}) {
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, "the dashboard service cannot be reached");
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    if (response.status === 401 && !path.endsWith("/login")) unauthorized();
    throw new ApiError(response.status, (data && data.error) || response.statusText, data && data.details);
  }
  return data;
}

/**
 * Open /api/stream. Handlers: snapshot(msg, bytes), update(msg, bytes), trouble(msg), state(name).
 * EventSource reconnects by itself after a dropped connection; when the server refuses (401,
 * 503) it gives up, so we check the session and reopen after a pause.
 */
export function openStream(handlers) {
  let source = null;
  let closed = false;
  let timer = null;
  const connect = () => {
    source = new EventSource("/api/stream");
    source.addEventListener("open", () => handlers.state("live"));
    source.addEventListener("snapshot", (e) => handlers.snapshot(JSON.parse(e.data), e.data.length));
    source.addEventListener("update", (e) => handlers.update(JSON.parse(e.data), e.data.length));
    source.addEventListener("trouble", (e) => handlers.trouble(JSON.parse(e.data)));
    source.addEventListener("error", () => {
      if (closed) return;
      handlers.state("reconnecting");
      if (source.readyState !== EventSource.CLOSED) return;
      clearTimeout(timer);
      timer = setTimeout(async () => {
        try {
          const session = await request("/api/session");
          if (session.auth && !session.role) return unauthorized();
        } catch {
          /* still down: try the stream again anyway */
        }
        if (!closed) connect();
      }, 3000);
    });
  };
  connect();
  return {
    close() {
      closed = true;
      clearTimeout(timer);
      if (source) source.close();
    },
  };
}

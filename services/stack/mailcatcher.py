"""A development SMTP catcher: accepts every message, keeps it as .eml, lists it over HTTP.

Started by `make run` when SMTP_HOST is unset, and in compose where Mailpit cannot be pulled.
`GET /api/v1/messages` answers in Mailpit's shape, so tests and tools work against either.
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import json
import time
import uuid
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


class CatchAll:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.messages: list[dict[str, Any]] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        message_id = uuid.uuid4().hex
        (self.folder / f"{int(time.time() * 1000)}-{message_id}.eml").write_bytes(raw)
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        body = parsed.get_body(("plain", "html"))
        self.messages.append(
            {
                "ID": message_id,
                "From": {"Address": envelope.mail_from},
                "To": [{"Address": rcpt} for rcpt in envelope.rcpt_tos],
                "Subject": str(parsed.get("subject", "")),
                "Snippet": body.get_content()[:200] if body is not None else "",
                "Created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
        )
        return "250 Message accepted for delivery"


async def _serve_http(catcher: CatchAll, host: str, port: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request_line = (await reader.readline()).decode(errors="replace")
        while (await reader.readline()) not in (b"\r\n", b"\n", b""):
            pass
        path = request_line.split(" ")[1] if " " in request_line else "/"
        if path.startswith("/api/v1/messages"):
            newest = list(reversed(catcher.messages))
            status, body = "200 OK", json.dumps({"total": len(newest), "messages": newest})
        elif path in ("/", "/healthz"):
            status, body = "200 OK", json.dumps({"status": "ok", "messages": len(catcher.messages)})
        else:
            status, body = "404 Not Found", json.dumps({"error": "not found"})
        data = body.encode()
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n"
            "Connection: close\r\n\r\n".encode()
            + data
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, host, port)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1025)
    parser.add_argument("--http-port", type=int, default=8025)
    parser.add_argument("--folder", default="data/mail")
    args = parser.parse_args()
    folder = Path(args.folder)
    folder.mkdir(parents=True, exist_ok=True)
    catcher = CatchAll(folder)
    controller = Controller(catcher, hostname=args.host, port=args.port)
    controller.start()
    print(
        f"mail catcher: SMTP on {args.host}:{args.port}, "
        f"messages at http://{args.host}:{args.http_port}/api/v1/messages, files in {folder}",
        flush=True,
    )
    try:
        asyncio.run(_serve_http(catcher, args.host, args.http_port))
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()


if __name__ == "__main__":
    main()

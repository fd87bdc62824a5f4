"""Use troupe from Python: open a session, call tools, watch progress, close.

Run it with the daemon serving (``troupe serve``)::

    python -m mcp_troupe.examples.client
"""

from __future__ import annotations

from mcp_troupe.transport.client import Client, RequestError
from mcp_troupe.transport.wire import jsonrpc


def main() -> None:
    with Client() as client:
        session = client.open("example")
        info = session.initialize(client_info={"name": "troupe-example-client", "version": "1"})
        print("connected to", info["serverInfo"]["name"], "speaking", info["protocolVersion"])

        tools = session.request("tools/list")["tools"]
        print("tools:", ", ".join(t["name"] for t in tools))

        result = session.request("tools/call", {"name": "add", "arguments": {"a": 2, "b": 3}})
        print("2 + 3 =", result["content"][0]["text"])

        # A long request with progress: send it, read notifications, then the result.
        session.send(
            jsonrpc.request(
                "nap",
                "tools/call",
                {
                    "name": "sleep",
                    "arguments": {"seconds": 2},
                    "_meta": {"progressToken": "nap"},
                },
            )
        )
        for _ in range(2):
            note = session.receive(timeout=10)
            print("progress:", note["params"]["progress"], "of", note["params"].get("total"))
        print(session.wait_result("nap")["content"][0]["text"])

        try:
            session.request("no/such/method")
        except RequestError as exc:
            print("error as expected:", exc.code, exc.message)

        print("closed:", session.close())


if __name__ == "__main__":
    main()

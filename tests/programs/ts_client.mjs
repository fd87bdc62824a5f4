// The official TypeScript SDK's stdio client, with its default environment, calling `add` through a
// command that is an MCP server (here `troupe connect ...`). Prints one JSON line: the tool's text.
// Usage: node ts_client.mjs NODE_MODULES COMMAND [ARGS...]  (NODE_MODULES: a folder holding the SDK)
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [modules, command, ...args] = process.argv.slice(2);
const sdk = (path) => import(pathToFileURL(join(modules, "@modelcontextprotocol/sdk/dist/esm", path)).href);
const { Client } = await sdk("client/index.js");
const { StdioClientTransport } = await sdk("client/stdio.js");

const transport = new StdioClientTransport({ command, args }); // no env: the SDK's default one
const client = new Client({ name: "troupe-test-ts", version: "1" });
await client.connect(transport);
const result = await client.callTool({ name: "add", arguments: { a: 2, b: 3 } });
console.log(JSON.stringify({ text: result.content[0].text, server: client.getServerVersion()?.name }));
await client.close();

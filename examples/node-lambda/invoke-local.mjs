// Runs the handler once outside Lambda: node invoke-local.mjs '{"bank":"acme","path":"/v1/accounts"}'
// Prints the result as one JSON line; exits 1 when the answer is not 2xx.
import { handler } from "./handler.mjs";

const event = JSON.parse(process.argv[2] ?? "{}");
const result = await handler(event);
console.log(JSON.stringify(result));
process.exitCode = result.statusCode >= 200 && result.statusCode < 300 ? 0 : 1;

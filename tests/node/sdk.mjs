// Drives Mesh with the official OpenAI Node SDK, unmodified (only baseURL points at Mesh).
// Usage: node sdk.mjs BASE_URL API_KEY MODEL EXPECTED_TEXT
import OpenAI from "openai";

const [baseURL, apiKey, model, expected] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });

function check(condition, message) {
  if (!condition) {
    console.error(message);
    process.exit(1);
  }
}

const response = await client.responses.create({ model, input: "Say hello" });
check(response.output_text === expected, `create: ${response.output_text}`);

const stream = await client.responses.create({ model, input: "Say hello", stream: true });
let text = "";
let last;
for await (const event of stream) {
  if (event.type === "response.output_text.delta") text += event.delta;
  last = event;
}
check(text === expected, `stream text: ${text}`);
check(last.type === "response.completed", `last event: ${last.type}`);

const runner = client.responses.stream({ model, input: "Say hello" });
const final = await runner.finalResponse();
// The Node SDK's streamed final response carries `output`, not the `output_text` convenience.
const finalText = final.output
  .filter((item) => item.type === "message")
  .flatMap((item) => item.content)
  .filter((part) => part.type === "output_text")
  .map((part) => part.text)
  .join("");
check(finalText === expected, `responses.stream: ${finalText}`);
check(final.model === model, `responses.stream model: ${final.model}`);
console.log("node-sdk-ok");

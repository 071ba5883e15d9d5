// Drives Mesh's /v1/chat/completions with the Vercel AI SDK's OpenAI provider, unmodified
// (`createOpenAI({ baseURL }).chat(model)`): generateText, streamText, a tool round trip run by
// the SDK (two steps) and generateObject with a zod schema.
// Usage: node ai_sdk.mjs BASE_URL API_KEY PREFIX EXPECTED_TEXT (models PREFIX/plain, /tools-one, /json)
import { createOpenAI } from "@ai-sdk/openai";
import { generateObject, generateText, stepCountIs, streamText, tool } from "ai";
import { z } from "zod";

const [baseURL, apiKey, prefix, expected] = process.argv.slice(2);
const [plain, toolsModel, jsonModel] = ["plain", "tools-one", "json"].map((m) => `${prefix}/${m}`);
const openai = createOpenAI({ baseURL, apiKey });

function check(condition, message) {
  if (!condition) {
    console.error(message);
    process.exit(1);
  }
}

const whole = await generateText({ model: openai.chat(plain), prompt: "Say hello", maxRetries: 0 });
check(whole.text === expected, `generateText: ${whole.text}`);
check(whole.finishReason === "stop" && whole.usage.inputTokens > 0, `generateText: ${JSON.stringify(whole.usage)}`);

const streamed = streamText({ model: openai.chat(plain), prompt: "Say hello", maxRetries: 0 });
let text = "";
for await (const delta of streamed.textStream) text += delta;
check(text === expected, `streamText: ${text}`);
const usage = await streamed.usage;
check(usage.inputTokens > 0 && usage.outputTokens > 0, `streamText usage: ${JSON.stringify(usage)}`);

const weather = tool({
  description: "Current weather in a city",
  inputSchema: z.object({ city: z.string() }),
  execute: async ({ city }) => (city === "Paris" ? "18C and sunny" : "unknown city"),
});
const withTools = await generateText({
  model: openai.chat(toolsModel),
  prompt: "What is the weather in Paris?",
  tools: { get_weather: weather },
  stopWhen: stepCountIs(2),
  maxRetries: 0,
});
check(withTools.steps.length === 2, `tool steps: ${withTools.steps.length}`);
check(withTools.steps[0].toolCalls[0]?.input?.city === "Paris", JSON.stringify(withTools.steps[0].toolCalls));
check(withTools.text.includes("18C and sunny"), `tool round trip: ${withTools.text}`);

const { object } = await generateObject({
  model: openai.chat(jsonModel),
  schema: z.object({ answer: z.number().int() }),
  prompt: "The answer?",
  maxRetries: 0,
});
check(object.answer === 42, `generateObject: ${JSON.stringify(object)}`);
console.log("ai-sdk-ok");

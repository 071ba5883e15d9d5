// Conformance of Mesh's /v1/responses with the Vercel AI SDK's OpenAI Responses provider,
// unmodified (`createOpenAI({ baseURL }).responses(model)`, its default `store: true`):
// generateText, streamText, a tool round trip run by the SDK, a multi-turn conversation (the
// second turn sends the first answer as an `item_reference`) and structured output.
// Usage: node conformance_ai_sdk.mjs BASE_URL API_KEY PREFIX EXPECTED_TEXT
// (models PREFIX/plain, /tools-one, /json, /history; see tests/sdk/conformance_common.py)
import { createOpenAI } from "@ai-sdk/openai";
import { generateObject, generateText, Output, stepCountIs, streamText, tool } from "ai";
import { z } from "zod";
import { cases, check } from "./conformance_cases.mjs";

const [baseURL, apiKey, prefix, expected] = process.argv.slice(2);
const openai = createOpenAI({ baseURL, apiKey });
const model = (name) => openai.responses(`${prefix}/${name}`);
// streamText reports a failed step to onError only; the cases rethrow it.
function streamed(options) {
  const errors = [];
  const result = streamText({ ...options, maxRetries: 0, onError: ({ error }) => errors.push(error) });
  return { result, errors };
}
async function textOf({ result, errors }) {
  let text = "";
  for await (const delta of result.textStream) text += delta;
  if (errors.length) throw errors[0];
  return text;
}
const weather = tool({
  description: "Current weather in a city",
  inputSchema: z.object({ city: z.string() }),
  execute: async ({ city }) => (city === "Paris" ? "18C and sunny" : "unknown city"),
});

await cases("ai-sdk", {
  async generate_text() {
    const result = await generateText({ model: model("plain"), prompt: "Say hello", maxRetries: 0 });
    check(result.text === expected, `text ${result.text}`);
    check(result.finishReason === "stop" && result.usage.inputTokens > 0, `${result.finishReason} ${JSON.stringify(result.usage)}`);
  },

  async stream_text() {
    const stream = streamed({ model: model("plain"), prompt: "Say hello" });
    const text = await textOf(stream);
    check(text === expected, `text ${text}`);
    const { result } = stream;
    const [usage, finishReason] = await Promise.all([result.usage, result.finishReason]);
    check(finishReason === "stop" && usage.outputTokens > 0, `${finishReason} ${JSON.stringify(usage)}`);
  },

  async tools() {
    const result = await generateText({
      model: model("tools-one"),
      prompt: "What is the weather in Paris?",
      tools: { get_weather: weather },
      stopWhen: stepCountIs(2),
      maxRetries: 0,
    });
    check(result.steps.length === 2, `${result.steps.length} steps`);
    check(result.steps[0].toolCalls[0]?.input?.city === "Paris", JSON.stringify(result.steps[0].toolCalls));
    check(result.text.includes("18C and sunny"), `text ${result.text}`);
  },

  async stream_tools() {
    const text = await textOf(
      streamed({
        model: model("tools-one"),
        prompt: "What is the weather in Paris?",
        tools: { get_weather: weather },
        stopWhen: stepCountIs(2),
      }),
    );
    check(text.includes("18C and sunny"), `text ${text}`);
  },

  async multi_turn() {
    const turn = "My name is Ada.";
    const first = await generateText({ model: model("history"), prompt: turn, maxRetries: 0 });
    check(first.text === `user:${turn}`, `first turn: ${first.text}`);
    const messages = [{ role: "user", content: turn }, ...first.response.messages, { role: "user", content: "What is my name?" }];
    const second = await generateText({ model: model("history"), messages, maxRetries: 0 });
    const wanted = `user:${turn} | assistant:${first.text} | user:What is my name?`;
    check(second.text === wanted, `the provider saw "${second.text}", expected "${wanted}"`);
  },

  async output_object() {
    const result = await generateText({
      model: model("json"),
      prompt: "The answer?",
      experimental_output: Output.object({ schema: z.object({ answer: z.number().int() }) }),
      maxRetries: 0,
    });
    check(result.experimental_output?.answer === 42, JSON.stringify(result.experimental_output));
  },

  async generate_object() {
    const { object } = await generateObject({
      model: model("json"),
      schema: z.object({ answer: z.number().int() }),
      prompt: "The answer?",
      maxRetries: 0,
    });
    check(object.answer === 42, JSON.stringify(object));
  },
});

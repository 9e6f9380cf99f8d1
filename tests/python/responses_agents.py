"""The OpenAI Agents SDK against model-runner's /v1 on the default model: an agent with a function tool,
its use forced on the first turn (ModelSettings(tool_choice="required")), then told to answer (a run hook
sets tool_choice "none" once the tool ran: the 135M model would otherwise call it again), run through
OpenAIResponsesModel and OpenAIChatCompletionsModel, each bounded by max_turns. Exits non-zero on the
first broken expectation."""
import asyncio
import dataclasses
import os

from agents import (Agent, ModelSettings, OpenAIChatCompletionsModel, OpenAIResponsesModel, RunHooks, Runner,
                    function_tool, set_tracing_disabled)
from openai import AsyncOpenAI

set_tracing_disabled(True)
client = AsyncOpenAI(base_url=os.environ["BASE_URL"], api_key="unused")
model = os.environ["MODEL"]
calls = []


@function_tool
def get_weather(city: str) -> str:
    """The current weather in a city."""
    calls.append(city)
    return f"It is sunny and 21 C in {city}."


class AnswerAfterTool(RunHooks):
    async def on_tool_end(self, context, agent, tool, result):
        agent.model_settings = dataclasses.replace(agent.model_settings, tool_choice="none")


async def run(agent_model, name):
    calls.clear()
    agent = Agent(
        name=name,
        instructions="Answer the user's question using the tools when useful. Be brief.",
        tools=[get_weather],
        model=agent_model,
        model_settings=ModelSettings(tool_choice="required", temperature=0, max_tokens=200),
        reset_tool_choice=False,
    )
    result = await Runner.run(agent, "What's the weather in Paris?", max_turns=4, hooks=AnswerAfterTool())
    assert calls, f"{name}: the tool was not called"
    assert isinstance(result.final_output, str) and result.final_output.strip(), (name, result.final_output)
    kinds = [item.type for item in result.new_items]
    assert "tool_call_item" in kinds and "tool_call_output_item" in kinds, (name, kinds)
    print(name, "->", result.final_output[:80].replace("\n", " "))


async def main():
    await run(OpenAIResponsesModel(model=model, openai_client=client), "responses")
    await run(OpenAIChatCompletionsModel(model=model, openai_client=client), "chat-completions")


asyncio.run(main())
print("agents checks passed")

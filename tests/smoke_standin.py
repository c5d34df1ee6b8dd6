"""A scripted stand-in for vLLM, for the smoke test's own tests. It is NOT vLLM.

It reuses tests/standin_vllm.py (HTTP, SSE streams, `echo`, readiness, recording) and
changes only what the answers say. With behaviour "good" it reads each request's
constraint (structured_outputs choice / regex / grammar / json, response_format
json_object / json_schema) and answers with a text that satisfies it, as vLLM's
constrained decoding would. Its pooling answers (embeddings, rerank, score) are the base
stand-in's fake vectors and similarities. Each other behaviour breaks exactly one kind of
answer, so a test can check that the smoke test fails that check and no other.
"""

from __future__ import annotations

import json
import re
from typing import Any

from standin_vllm import StandinConfig, StandinServer

from mvgen.smoke import finite_language

BEHAVIOURS = (
    "good",
    "invalid_json",  # every JSON answer is cut off
    "bad_schema",  # JSON that parses but leaves out required fields
    "bad_choice",  # a word outside the choice list
    "regex_miss",  # text the regex does not match
    "bad_grammar",  # a sentence outside the grammar's language
    "no_echo",  # completions ignore echo: the prompt is missing from the text
    "short_vector",  # the last embedding is one value shorter than the others
    "missing_vector",  # one embedding fewer than inputs
    "unordered_rerank",  # rerank results in the documents' order, not by relevance
    "wrong_top",  # rerank ordered, but by the opposite of relevance
    "wrong_score",  # /score says the opposite of relevance
)


class ScriptedStandin(StandinServer):
    def __init__(self, config: StandinConfig | None = None, *, behaviour: str = "good") -> None:
        if behaviour not in BEHAVIOURS:
            raise ValueError(f"behaviour must be one of {BEHAVIOURS}")
        super().__init__(config)
        self.behaviour = behaviour

    def _pieces(self, body: dict[str, Any]) -> list[str]:
        answer = self.scripted_answer(body)
        if answer is None:
            return super()._pieces(body)
        middle = len(answer) // 2  # two pieces, so a stream has several content chunks
        return [answer[:middle], answer[middle:]] if middle else [answer]

    async def _answer(self, record: Any, body: dict[str, Any], writer: Any) -> bool:
        if self.behaviour == "no_echo" and body.get("echo"):
            body = {**body, "echo": False}
        return await super()._answer(record, body, writer)

    def embeddings(self, body: dict[str, Any]) -> dict[str, Any]:
        answer = super().embeddings(body)
        if self.behaviour == "short_vector":
            answer["data"][-1]["embedding"] = answer["data"][-1]["embedding"][:-1]
        elif self.behaviour == "missing_vector":
            answer["data"] = answer["data"][:-1]
        return answer

    def rerank(self, body: dict[str, Any]) -> dict[str, Any]:
        answer = super().rerank(body)
        results = answer["results"]
        if self.behaviour == "unordered_rerank":
            results.sort(key=lambda r: r["index"])
        elif self.behaviour == "wrong_top":  # the scores stay in order, the documents flip
            flipped = [(r["index"], r["document"]) for r in reversed(results)]
            for result, (index, document) in zip(results, flipped, strict=True):
                result["index"], result["document"] = index, document
        return answer

    def score(self, body: dict[str, Any]) -> dict[str, Any]:
        answer = super().score(body)
        if self.behaviour == "wrong_score":
            for item in answer["data"]:
                item["score"] = 1 - item["score"]
        return answer

    def scripted_answer(self, body: dict[str, Any]) -> str | None:
        """A text meeting the request's constraint (or breaking it, per behaviour)."""
        wrong = self.behaviour
        outputs = body.get("structured_outputs") or {}
        response_format = body.get("response_format") or {}
        if "choice" in outputs:
            return "Maybe" if wrong == "bad_choice" else outputs["choice"][0]
        if "regex" in outputs:
            return "not an address" if wrong == "regex_miss" else matching(outputs["regex"])
        if "grammar" in outputs:
            language = sorted(finite_language(outputs["grammar"]))
            return "SELECT * FROM users" if wrong == "bad_grammar" else language[0]
        if "json" in outputs:
            return self._json(example(outputs["json"]))
        if response_format.get("type") == "json_schema":
            return self._json(example(response_format["json_schema"]["schema"]))
        if response_format.get("type") == "json_object":
            return self._json({"colors": ["red", "green", "blue"]})
        return None

    def _json(self, value: Any) -> str:
        if self.behaviour == "bad_schema" and isinstance(value, dict):
            value = dict(list(value.items())[:1])
        text = json.dumps(value)
        return text[: len(text) // 2] if self.behaviour == "invalid_json" else text


def example(schema: dict[str, Any]) -> Any:
    """A value valid for the simple schemas the smoke test sends."""
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        return {name: example(sub) for name, sub in (schema.get("properties") or {}).items()}
    if kind == "array":
        return [example(schema.get("items") or {"type": "string"})]
    return {"string": "John", "integer": 30, "number": 1.5, "boolean": True}.get(kind, None)


_ATOM_RE = re.compile(r"(\\.|\[[^\]]*\]|[^\\\[])([+*?]|\{\d+\})?")
_ESCAPES = {"w": "a", "d": "7", "s": " "}


def matching(pattern: str) -> str:
    """A string `pattern` fully matches, for plain sequences of atoms (literals, escapes
    such as \\w or \\., character classes) with optional quantifiers; anything fancier is
    refused rather than answered wrongly."""
    text = ""
    for atom, quantifier in _ATOM_RE.findall(pattern):
        if atom in ("(", ")", "|", "^", "$"):
            raise ValueError(f"pattern {pattern!r} is too fancy for the stand-in")
        if atom.startswith("\\"):
            char = _ESCAPES.get(atom[1], atom[1])
        elif atom.startswith("["):
            char = atom[1]
        else:
            char = "a" if atom == "." else atom
        count = int(quantifier[1:-1]) if quantifier.startswith("{") else 2
        text += "" if quantifier in ("*", "?") else char * (count if quantifier else 1)
    if not re.fullmatch(pattern, text):
        raise ValueError(f"could not make a string matching {pattern!r}")
    return text

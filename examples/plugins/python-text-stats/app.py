"""text-stats: word, sentence and character counts plus the most frequent words.

An example plugin written in Python and built into a WebAssembly component with
componentize-py against the orchestrator's WIT contract (wit/0.1.0, world
`executor`). The statistics live in `text_stats`, a plain function that runs
without the bindings; `WitWorld` adapts it to the contract.
"""

import json
import re
from collections import Counter

WORD = re.compile(r"[0-9a-z']+")
SENTENCE_END = re.compile(r"[.!?]+")

INPUT_SCHEMA = {
    "type": "object",
    "required": ["text"],
    "properties": {
        "text": {"type": "string"},
        "top": {"type": "integer", "minimum": 0},
    },
}

OUTPUT_SCHEMA = {
    "type": "object",
    "properties": {
        "words": {"type": "integer"},
        "sentences": {"type": "integer"},
        "characters": {"type": "integer"},
        "top_words": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"word": {"type": "string"}, "count": {"type": "integer"}},
            },
        },
    },
}


def text_stats(text, top=5):
    """Counts words, sentences and characters; lists the `top` most frequent
    words, ties broken alphabetically."""
    words = [w.strip("'") for w in WORD.findall(text.lower())]
    words = [w for w in words if w]
    sentences = [s for s in SENTENCE_END.split(text) if s.strip()]
    counts = Counter(words)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:top]
    return {
        "words": len(words),
        "sentences": len(sentences),
        "characters": len(text),
        "top_words": [{"word": w, "count": c} for w, c in ranked],
    }


try:
    import wit_world
    from wit_world.imports import host, types
    from componentize_py_types import Err
except ImportError:  # plain Python: only `text_stats` is usable
    wit_world = None


if wit_world is not None:

    class WitWorld(wit_world.WitWorld):
        def describe(self) -> types.PluginInfo:
            return types.PluginInfo(
                name="text-stats",
                version="0.1.0",
                description="Counts words, sentences and characters, and lists the most frequent words.",
                input_schema=json.dumps(INPUT_SCHEMA),
                output_schema=json.dumps(OUTPUT_SCHEMA),
                capabilities=types.Capabilities(
                    http_hosts=[], filesystem=[], env=[], secrets=[]
                ),
            )

        def execute(self, ctx: types.TaskContext, input: str) -> types.TaskOutput:
            try:
                args = json.loads(input)
            except ValueError as e:
                raise Err(types.TaskError_InvalidInput(f"input is not JSON: {e}"))
            if not isinstance(args, dict) or not isinstance(args.get("text"), str):
                raise Err(types.TaskError_InvalidInput("`text` must be a string"))
            top = args.get("top", 5)
            if not isinstance(top, int) or isinstance(top, bool) or top < 0:
                raise Err(types.TaskError_InvalidInput("`top` must be a whole number >= 0"))
            stats = text_stats(args["text"], top)
            host.log(
                host.LogLevel.INFO,
                "counted words",
                [host.Field(key="words", value=str(stats["words"]))],
            )
            return types.TaskOutput(output=json.dumps(stats), usage=None)

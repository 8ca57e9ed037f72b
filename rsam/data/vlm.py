"""Optional vision-language model step of the data engine (off unless ``--vlm-url`` is given).

Follows the paper's attribute expansion (spec ``remotesam.md`` §1.1 B): the VLM first captions the image with
:data:`CAPTION_PROMPT`, then a second request turns the caption into per-category descriptions of at most 20 words,
returned as JSON ``{category: description}`` (:data:`PARSE_SYSTEM_PROMPT`, after the paper's Table 17). One
addition: the user message lists the image's annotated categories, so that descriptions can be matched to masks.

The endpoint is any OpenAI-compatible ``POST {base_url}/chat/completions`` (vLLM, SGLang, llama.cpp server, ...).
Answers are cached in a JSONL file keyed by model, prompt version and image sha256, so an interrupted or repeated
conversion does not ask again and stays deterministic.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import urllib.error
import urllib.request
from pathlib import Path

log = logging.getLogger(__name__)

PROMPT_VERSION = 1
MAX_WORDS = 20
CAPTION_PROMPT = "Describe all of your observations in this image as comprehensively as possible."
PARSE_SYSTEM_PROMPT = (
    "You will be given a detailed caption of a remote sensing image. Extract all object categories mentioned in it. "
    "For each category, write a new concise description that focuses on that single class of object: its "
    "attributes (such as colour, shape, size, state) and its spatial relationships. Each description must have no "
    "more than 20 words. Answer with JSON only, mapping each category to its description, for example: "
    '{"aircraft": "Multiple aircraft parked on the apron.", '
    '"jet bridges": "Multiple jet bridges connecting gates to the terminal."}'
)
_MIME = {"jpg": "image/jpeg", "png": "image/png", "tif": "image/tiff", "webp": "image/webp", "bmp": "image/bmp"}


class VLMError(RuntimeError):
    """The VLM endpoint failed or answered something unusable."""


def extract_json_object(text: str) -> dict:
    """The first JSON object in a model answer (tolerates code fences and chatter around it)."""
    match = re.search(r"\{.*\}", text, re.DOTALL)
    if not match:
        raise VLMError(f"no JSON object in the answer: {text[:200]!r}")
    try:
        value = json.loads(match.group(0))
    except json.JSONDecodeError as err:
        raise VLMError(f"invalid JSON in the answer: {err}") from err
    if not isinstance(value, dict):
        raise VLMError("the answer's JSON is not an object")
    return {str(key): str(val) for key, val in value.items() if isinstance(val, str)}


def word_count(text: str) -> int:
    return len(text.split())


class VLMClient:
    """Minimal OpenAI-compatible chat client (stdlib only) with an on-disk answer cache."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float = 120.0,
        cache_path: str | Path | None = None,
    ):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.api_key, self.timeout = model, api_key, timeout
        self.cache_path = Path(cache_path) if cache_path else None
        self.cache: dict[str, dict] = {}
        self.requests = 0
        if self.cache_path and self.cache_path.is_file():
            for line in self.cache_path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    entry = json.loads(line)
                    self.cache[entry["key"]] = entry["value"]

    def _chat(self, messages: list[dict]) -> str:
        body = json.dumps({"model": self.model, "messages": messages, "temperature": 0}).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        self.requests += 1
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = json.loads(response.read().decode("utf-8"))
            return payload["choices"][0]["message"]["content"]
        except (urllib.error.URLError, OSError, KeyError, IndexError, TypeError, json.JSONDecodeError) as err:
            raise VLMError(f"VLM request to {self.url} failed: {err}") from err

    def caption(self, image: bytes, suffix: str) -> str:
        url = f"data:{_MIME.get(suffix, 'application/octet-stream')};base64,{base64.b64encode(image).decode('ascii')}"
        content = [{"type": "text", "text": CAPTION_PROMPT}, {"type": "image_url", "image_url": {"url": url}}]
        return self._chat([{"role": "user", "content": content}])

    def parse(self, caption: str, categories: list[str]) -> dict[str, str]:
        user = f"Caption: {caption}\nCategories annotated in this image: {', '.join(categories)}."
        answer = self._chat([{"role": "system", "content": PARSE_SYSTEM_PROMPT}, {"role": "user", "content": user}])
        return extract_json_object(answer)

    def describe(self, image: bytes, suffix: str, categories: list[str]) -> dict[str, str]:
        """``{category: description}`` for one image (cached)."""
        key = hashlib.sha256(
            json.dumps([self.model, PROMPT_VERSION, hashlib.sha256(image).hexdigest(), sorted(categories)]).encode()
        ).hexdigest()
        if key not in self.cache:
            caption = self.caption(image, suffix)
            value = {"caption": caption, "descriptions": self.parse(caption, categories)}
            self.cache[key] = value
            if self.cache_path:
                self.cache_path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.cache_path, "a", encoding="utf-8") as handle:
                    handle.write(json.dumps({"key": key, "value": value}, ensure_ascii=False) + "\n")
        return self.cache[key]["descriptions"]


def normalise_category(name: str) -> str:
    """Lower-case, single spaces, naive singular of the last word: used to match VLM keys to dataset categories."""
    words = name.lower().replace("_", " ").replace("-", " ").split()
    if not words:
        return ""
    last = words[-1]
    if last.endswith("ies") and len(last) > 4:
        last = last[:-3] + "y"
    elif last.endswith(("ses", "xes", "ches", "shes")):
        last = last[:-2]
    elif last.endswith("s") and not last.endswith("ss"):
        last = last[:-1]
    return " ".join(words[:-1] + [last])

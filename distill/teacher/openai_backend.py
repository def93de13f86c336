"""Teacher over any OpenAI-compatible chat endpoint: a `vllm serve` server or a hosted VLM.

Images travel as PNG data URLs. Requests in a batch run on a thread pool capped at
`max_concurrency`; transient failures (timeouts, connection errors, 408/409/429, 5xx) are retried with
exponential backoff `backoff_s * 2**attempt` (the paper's 3 s * 2^attempt, up to 6 retries).
The API key is read from the environment variable named by `api_key_env` and is never logged.
Against a vLLM server, `permutation_constraint` asks vLLM's structured outputs for one of the N! answers
(`structured_outputs.choice`, vLLM >= 0.11), so every answer is a permutation; any other endpoint gets the
JSON schema (`json_schema`) and the parser + repair retry.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from distill.teacher.base import Generation, Teacher, TeacherRequest
from distill.teacher.prompt import (
    MAX_PERMUTATION_N,
    build_describe_messages,
    build_messages,
    grammar_schema,
    image_data_url,
    permutation_answers,
)

if TYPE_CHECKING:
    from distill.config.teacher import TeacherConfig

log = logging.getLogger(__name__)

RETRYABLE_STATUS = {408, 409, 429}
# vLLM's own convention for "no key configured": the server ignores it unless started with --api-key.
NO_KEY = "EMPTY"


def _is_retryable(err: Exception) -> bool:
    import openai

    if isinstance(err, (openai.APITimeoutError, openai.APIConnectionError)):
        return True
    if isinstance(err, openai.APIStatusError):
        return err.status_code in RETRYABLE_STATUS or err.status_code >= 500
    return False


def _describe(err: Exception) -> str:
    import openai

    if isinstance(err, openai.APIStatusError):
        return f"http_{err.status_code}"
    return type(err).__name__


class OpenAITeacher(Teacher):
    backend = "openai"

    def __init__(self, cfg: TeacherConfig, sleep=time.sleep):
        super().__init__(cfg)
        import openai

        o = cfg.openai
        key = os.environ.get(o.api_key_env)
        if not key:
            log.info("no API key in $%s; sending requests without one", o.api_key_env)
        # The client's own retries are off: ours add the paper's backoff and count attempts.
        self.client = openai.OpenAI(base_url=o.base_url, api_key=key or NO_KEY, timeout=o.timeout_s, max_retries=0)
        self.sleep = sleep
        self._url_cache: dict[str, str] = {}

    def _image_urls(self, req: TeacherRequest) -> list[str]:
        urls = []
        for c in req.candidates:
            if c.item_id not in self._url_cache:
                self._url_cache[c.item_id] = image_data_url(c.image)
            urls.append(self._url_cache[c.item_id])
        return urls

    def _request_kwargs(self, req: TeacherRequest, repairs) -> dict:
        o = self.cfg.openai
        kwargs = dict(model=o.model, temperature=o.temperature, max_tokens=o.max_tokens,
                      messages=build_messages(req.persona_text, self._image_urls(req), req.task, repairs))
        if o.permutation_constraint and req.n <= MAX_PERMUTATION_N:
            # vLLM's request extension; it takes the place of response_format (one constraint per request).
            kwargs["extra_body"] = {"structured_outputs": {"choice": permutation_answers(req.n)}}
        elif o.json_schema:
            # Without uniqueItems: vLLM 0.32 answers HTTP 400 to every request whose schema has it (xgrammar and
            # guidance alike, measured), no grammar backend enforces it, and the parser checks it anyway.
            kwargs["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "ranking", "schema": grammar_schema(req.n), "strict": True}}
        return kwargs

    def _describe_kwargs(self, req, repairs) -> dict:
        """A target description (describe-v1): free text, no structured output, `describe_max_tokens`."""
        o = self.cfg.openai
        return dict(model=o.model, temperature=o.temperature, max_tokens=self.cfg.describe_max_tokens,
                    messages=build_describe_messages(image_data_url(req.reference.image), req.modification, repairs))

    def _call(self, req: TeacherRequest, repairs) -> Generation:
        return self._send(req.key, self._request_kwargs(req, repairs))

    def _send(self, key: str, kwargs: dict) -> Generation:
        """One chat completion with the transient-failure retries and backoff."""
        o = self.cfg.openai
        t0 = time.perf_counter()
        last = "unknown"
        for attempt in range(o.max_retries + 1):
            try:
                resp = self.client.chat.completions.create(**kwargs)
                text = resp.choices[0].message.content if resp.choices else None
                return Generation(text or "", None, time.perf_counter() - t0)
            except Exception as err:  # noqa: BLE001 - classified below; a bad call must not kill the batch
                last = _describe(err)
                if not _is_retryable(err) or attempt == o.max_retries:
                    break
                delay = o.backoff_s * 2**attempt
                log.warning("teacher call for %s failed (%s); retry %d/%d in %.1fs",
                            key, last, attempt + 1, o.max_retries, delay)
                self.sleep(delay)
        return Generation(None, last, time.perf_counter() - t0)

    def _generate(self, jobs) -> list[Generation]:
        if not jobs:
            return []
        workers = max(1, min(self.cfg.openai.max_concurrency, len(jobs)))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(lambda job: self._call(*job), jobs))

    def _generate_describe(self, jobs) -> list[Generation]:
        if not jobs:
            return []
        workers = max(1, min(self.cfg.openai.max_concurrency, len(jobs)))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(lambda job: self._send(job[0].key, self._describe_kwargs(*job)), jobs))

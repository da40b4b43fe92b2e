"""In-process fake backends for tests: no network, no model."""

from __future__ import annotations

import asyncio

from genrep.diting.llm import Completion, LLMError, Sampling


class EchoBackend:
    """Answers ``"echo: <last message>"`` after ``delay_s``; ``"fail"`` as the last message raises LLMError."""

    def __init__(self, model: str = "echo", delay_s: float = 0.0):
        self.model, self.name = model, f"fake:{model}"
        self.delay_s = delay_s
        self.calls: list[tuple[list[dict], Sampling]] = []
        self.closed = False

    async def complete(self, messages: list[dict], sampling: Sampling) -> Completion:
        self.calls.append((messages, sampling))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        prompt = messages[-1]["content"]
        if prompt == "fail":
            raise LLMError("injected failure")
        text = f"echo: {prompt}"
        return Completion(
            text=text,
            model=self.model,
            prompt_tokens=len(prompt.split()),
            completion_tokens=len(text.split()),
            cached=False,
            latency_s=self.delay_s,
            attempts=1,
        )

    async def aclose(self) -> None:
        self.closed = True


class ScriptedBackend(EchoBackend):
    """Answers with ``replies`` in turn, whatever it is asked."""

    def __init__(self, replies: list[str]):
        super().__init__("scripted")
        self.replies = list(replies)

    async def complete(self, messages: list[dict], sampling: Sampling) -> Completion:
        self.calls.append((list(messages), sampling))
        text = self.replies.pop(0)
        return Completion(
            text=text, model=self.model, prompt_tokens=1, completion_tokens=1, cached=False, latency_s=0.0, attempts=1
        )

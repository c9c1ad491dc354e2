"""A webhook receiver on loopback: accepts POSTs on any path and records them (with the
base emulator's fault injection, e.g. answering 500 a few times to exercise retries)."""

from __future__ import annotations

from emulators.base import Emulator, Reply, Request


class WebhookReceiver(Emulator):
    def setup_routes(self) -> None:
        self.route("POST", "/.*", self._accept)

    def _accept(self, req: Request) -> Reply:
        return Reply(204)

    def hook_url(self, path: str = "/hook") -> str:
        return self.url + path

    def posts(self, path: str = "/hook") -> list[Request]:
        return [r for r in self.requests if r.method == "POST" and r.path == path]

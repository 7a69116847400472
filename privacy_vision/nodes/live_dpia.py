"""The live DPIA (the aggregator's ~/generate_dpia service): every other DPIA node's parameters are read through its
/<node>/get_parameters service, as `ros2 param get` does, and the document is built by core/compliance.py. The
calls are awaited, so the executor keeps serving meanwhile (in composed mode it serves the nodes being asked)."""

from __future__ import annotations

import os
from typing import Any

from rcl_interfaces.srv import GetParameters, ListParameters
from rclpy.node import Node
from rclpy.parameter import parameter_value_to_python

from privacy_vision.core.compliance import build_dpia, dpia_json, render_markdown, system_facts
from privacy_vision.core.graph import DPIA_NODES
from privacy_vision.core.recordings import dpia_recordings
from privacy_vision_msgs.srv import GenerateDpia

ANSWER_TIMEOUT_S = 5.0  # a node that does not answer within this is named as missing in the response


class LiveDpia:
    """Serves GenerateDpia on the host node from the parameters in force in the running graph."""

    def __init__(self, host: Node, audit_append) -> None:
        self.host, self.audit_append = host, audit_append
        # Created once, so that discovery has matched them with the nodes' services by the time a DPIA is asked for.
        self.clients = {
            name: (
                host.create_client(ListParameters, f"/{name}/list_parameters"),
                host.create_client(GetParameters, f"/{name}/get_parameters"),
            )
            for name in DPIA_NODES
            if name != host.get_name()
        }
        host.create_service(GenerateDpia, "~/generate_dpia", self.generate)

    async def generate(self, request: GenerateDpia.Request, response: GenerateDpia.Response) -> GenerateDpia.Response:
        fmt = request.format.strip().lower() or "markdown"
        if fmt not in ("markdown", "json"):
            response.success, response.message = False, "format must be 'markdown' or 'json'"
            return response
        params = {self.host.get_name(): {name: p.value for name, p in self.host.get_parameters_by_prefix("").items()}}
        for name in self.clients:
            values = await self.read_parameters(name)
            if values is not None:
                params[name] = values
        topics = {
            name: list(types)
            for name, types in self.host.get_topic_names_and_types()
            if not name.startswith(("/rosout", "/parameter_events", "/diagnostics"))
        }
        facts = system_facts(
            dict(os.environ),
            topics,
            float(params.get("uplink", {}).get("ingest_retention_days", 90.0)),
            "live",
            dpia_recordings(self.host.audit.directory),
        )
        dpia = build_dpia(params, facts)
        missing = sorted(set(DPIA_NODES) - set(params))
        response.success = True
        response.message = (
            f"nodes not answering (their settings are missing from the document): {missing}" if missing else "complete"
        )
        response.document = render_markdown(dpia) if fmt == "markdown" else dpia_json(dpia)
        self.audit_append("dpia_generated", format=fmt, risks=len(dpia["risks"]), missing_nodes=missing)
        return response

    async def read_parameters(self, node: str) -> dict[str, Any] | None:
        """All parameters of `node` (names from list_parameters, values from get_parameters); None when it is not there."""
        lister, getter = self.clients[node]
        if not (lister.service_is_ready() and getter.service_is_ready()):
            return None
        listed = await self._answer(lister.call_async(ListParameters.Request()))
        if listed is None:
            return None
        names = list(listed.result.names)
        got = await self._answer(getter.call_async(GetParameters.Request(names=names)))
        if got is None:
            return None
        return {name: parameter_value_to_python(value) for name, value in zip(names, got.values)}

    async def _answer(self, future):
        """The future's result, or None once ANSWER_TIMEOUT_S has passed (the future is cancelled then)."""
        timer = self.host.create_timer(ANSWER_TIMEOUT_S, future.cancel)
        try:
            return await future
        finally:
            self.host.destroy_timer(timer)

"""Run rqt's Node Graph (rqt_graph's RosGraph plugin, its own classes: Graph, the dot code generator, the Qt scene)
against the running graph and print what it draws as JSON: the nodes, and each topic with the type the plugin's own
tooltip gives it. Shows every topic (Nodes/Topics (all), nothing hidden or grouped) so that no image topic can be
left out by a filter. Run by test_rqt.py under Xvfb; saves a screenshot of the widget.

Usage: rqt_graph_probe.py NODES SECONDS SCREENSHOT (NODES: comma-separated node names to wait for)"""

import json
import sys

import pydot
from rqt_graph.ros_graph import RosGraph

from testkit.rqt import ProbeContext, pump, qt_and_ros, screenshot

SHOW_EVERYTHING = {  # instance settings, as rqt restores them: Nodes/Topics (all), no topic hidden or grouped
    "graph_type_combo_box_index": 2,
    "dead_sinks_check_box_state": False,
    "leaf_topics_check_box_state": False,
    "group_image_check_box_state": False,
    "unreachable_check_box_state": False,
}


class Settings:
    """The one method of qt_gui's Settings that RosGraph.restore_settings calls."""

    def value(self, key: str, default=None):
        return SHOW_EVERYTHING.get(key, default)


def items(graph: pydot.Dot) -> list[pydot.Node]:
    """Every node item of the dot graph, in namespace clusters too."""
    return [*graph.get_nodes(), *(n for sub in graph.get_subgraphs() for n in items(sub))]


def drawn(plugin: RosGraph) -> tuple[list[str], dict[str, str]]:
    """Node names and topic -> type, read from the dot code the plugin laid out and drew (each item's tooltip holds
    its URL: the node's name, or 'topic:NAME')."""
    nodes, topics = [], {}
    if not plugin._current_dotcode:
        return nodes, topics
    for item in items(pydot.graph_from_dot_data(plugin._current_dotcode)[0]):
        url = (item.get_tooltip() or "").strip('"')
        if url.startswith("topic:"):
            tooltip = plugin._generate_tool_tip(url)  # what hovering the topic shows: 'Topic: ... Type: ...'
            topics[url[len("topic:") :]] = tooltip.split("Type:")[-1].strip(" \n[]'")
        elif url.startswith("/"):
            nodes.append(url.lstrip("/"))
    return nodes, topics


expected, seconds, shot = set(sys.argv[1].split(",")), float(sys.argv[2]), sys.argv[3]
with qt_and_ros("rqt_graph_probe") as (app, node):
    context = ProbeContext(node)
    plugin = RosGraph(context)
    plugin.restore_settings(Settings(), Settings())

    def all_shown() -> bool:
        plugin._update_rosgraph()  # what the Refresh button does
        return expected <= set(drawn(plugin)[0])

    pump(app, seconds, all_shown)
    screenshot(app, context.widget, shot, plugin._fit_in_view)  # what the Fit button does
    nodes, topics = drawn(plugin)
    print(json.dumps({"nodes": sorted(nodes), "topics": topics}))
    plugin.shutdown_plugin()

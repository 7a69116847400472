"""Run rqt's Parameter Reconfigure (rqt_reconfigure's ParamClientWidget: the node's editors over the plugin's own
ParamClient) against one node of the running graph, and type values into a parameter's field as a user does (text,
then Enter). Prints, per value, what the node answered through the plugin's client (taken, or refused with the node's
reason) and what the field shows afterwards, and the node's log lines that rqt Console (rqt_console's plugin, on the
same node) shows meanwhile, as JSON. Run by test_rqt.py under Xvfb; saves a screenshot.

rqt_reconfigure 1.6.2's editors discard the node's answer (EditorWidget.update_remote ignores set_parameters' result),
so the probe records the answers where the plugin receives them: its ParamClient.set_parameters. A user reads the
reason in rqt Console, where the node logs it as a WARN.

Usage: rqt_reconfigure_probe.py NODE PARAMETER VALUE[,VALUE...] SCREENSHOT"""

import json
import sys

from python_qt_binding.QtWidgets import QLineEdit
from rqt_console.console import Console
from rqt_reconfigure.param_api import find_nodes_with_params
from rqt_reconfigure.param_client_widget import ParamClientWidget

from testkit.rqt import ProbeContext, pump, qt_and_ros, screenshot

node_name, parameter, values, shot = sys.argv[1], sys.argv[2], sys.argv[3].split(","), sys.argv[4]
with qt_and_ros("rqt_reconfigure_probe") as (app, node):
    # The node list on the plugin's left: a node can be opened once discovery has found its parameter services.
    assert pump(app, 30.0, lambda: node_name in find_nodes_with_params(node)), find_nodes_with_params(node)
    console = Console(ProbeContext(node))  # subscribes to /rosout, as when opened next to Parameter Reconfigure
    widget = ParamClientWidget(ProbeContext(node), node_name)  # lists, reads and describes the node's parameters
    client = widget._param_client
    answers = []
    set_parameters = client.set_parameters

    def recorded(parameters):
        response = set_parameters(parameters)
        answers.extend({"successful": r.successful, "reason": r.reason} for r in response.results)
        return response

    client.set_parameters = recorded

    def field() -> QLineEdit:
        """The parameter's text field (looked up each time: the plugin's filter rebuilds the editors)."""
        return widget._editor_widgets[parameter].findChild(QLineEdit)

    typed = []
    for value in values:
        before = len(answers)
        field().setText(value)
        field().editingFinished.emit()  # what Enter in the field does
        pump(app, 10.0, lambda before=before: len(answers) > before)
        pump(app, 1.0)  # the parameter event of a taken value updates the field
        typed.append({"typed": value, **(answers[before] if len(answers) > before else {}), "shown": field().text()})

    def logged() -> list[str]:
        """The node's lines in rqt Console's list ('node' is the logger's name, without the slash)."""
        return [m.message for m in console._model._messages if m.node == node_name.lstrip("/")]

    reasons = [t["reason"] for t in typed if t.get("reason")]
    pump(app, 10.0, lambda: all(any(r in line for line in logged()) for r in reasons))
    screenshot(app, widget, shot, size=(700, 600))
    print(json.dumps({"typed": typed, "console": logged()}))
    console.shutdown_plugin()
    widget.close()

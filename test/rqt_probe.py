"""Run rqt's Topic Monitor (rqt_topic's TopicWidget, the plugin's own widget) against the running graph, monitor the
given topics, and print what it shows as JSON: each topic's row and the field names under it. Run by
test_rqt.py under Xvfb; saves a screenshot of the widget when asked."""

import json
import sys

from python_qt_binding.QtCore import Qt
from rqt_topic.topic_widget import TopicWidget

from testkit.rqt import pump, qt_and_ros, screenshot

topics, seconds, shot = sys.argv[1].split(","), float(sys.argv[2]), sys.argv[3]
with qt_and_ros("rqt_topic_probe") as (app, node):
    widget = TopicWidget(node)
    widget.resize(1200, 700)
    widget.show()
    widget.start()
    checked: set[str] = set()

    def tick_new_rows() -> bool:
        for topic in topics:
            item = widget._tree_items.get(topic)  # the plugin's row of each topic (created by its refresh timer)
            if item is not None and topic not in checked:
                item.setCheckState(0, Qt.Checked)  # what a click on the row's checkbox does: monitor it
                checked.add(topic)
        return False  # monitor for the whole time, so that messages arrive and fill the fields

    pump(app, seconds, tick_new_rows)
    shown = {}
    for topic in topics:
        item = widget._tree_items.get(topic)
        if item is None:
            continue
        item.setExpanded(True)
        shown[topic] = {
            "type": item.text(1),
            "fields": [item.child(i).text(0) for i in range(item.childCount())],
        }
    screenshot(app, widget, shot, size=(1200, 700))
    print(json.dumps(shown))
    widget.shutdown_plugin()

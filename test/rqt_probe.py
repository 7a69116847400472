"""Run rqt's Topic Monitor (rqt_topic's TopicWidget, the plugin's own widget) against the running graph, monitor the
given topics, and print what it shows as JSON: each topic's row and the field names under it. Run by
test_rqt.py under Xvfb; saves a screenshot of the widget when asked."""

import json
import sys
import threading
import time

import rclpy
from python_qt_binding.QtCore import Qt
from python_qt_binding.QtWidgets import QApplication
from rclpy.executors import SingleThreadedExecutor
from rqt_topic.topic_widget import TopicWidget

topics, seconds, screenshot = sys.argv[1].split(","), float(sys.argv[2]), sys.argv[3]
app = QApplication(sys.argv[:1])
rclpy.init()
node = rclpy.create_node("rqt_topic_probe")
executor = SingleThreadedExecutor()
executor.add_node(node)
threading.Thread(target=executor.spin, daemon=True).start()
widget = TopicWidget(node)
widget.resize(1200, 700)
widget.show()
widget.start()
checked: set[str] = set()
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    app.processEvents()
    for topic in topics:
        item = widget._tree_items.get(topic)  # the plugin's row of each topic (created by its refresh timer)
        if item is not None and topic not in checked:
            item.setCheckState(0, Qt.Checked)  # what a click on the row's checkbox does: monitor it
            checked.add(topic)
    time.sleep(0.05)
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
app.processEvents()
widget.grab().save(screenshot)
print(json.dumps(shown))
widget.shutdown_plugin()
executor.shutdown()
rclpy.shutdown()

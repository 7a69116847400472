"""What the rqt probes (test/rqt_*_probe.py, run by test_rqt.py under Xvfb) share: a Qt application and a ROS node
spun on a background thread, as rqt_gui_py gives its plugins, the plugin context their constructors take, and the
screenshot. Imported only by the probes: it needs PyQt5 and the rqt wheels from ../shared/rqt."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import rclpy
from python_qt_binding.QtCore import QObject
from python_qt_binding.QtWidgets import QApplication, QWidget
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node


class ProbeContext(QObject):
    """The part of rqt_gui_py's PluginContext that the plugins use: the shared node, the instance number, and the
    widget the plugin adds (rqt would dock it; the probe shows it and grabs it)."""

    def __init__(self, node: Node) -> None:
        super().__init__()
        self.node = node
        self.widget: QWidget | None = None

    def serial_number(self) -> int:
        return 1

    def add_widget(self, widget: QWidget) -> None:
        self.widget = widget


@contextmanager
def qt_and_ros(name: str) -> Iterator[tuple[QApplication, Node]]:
    """A QApplication and a node spinning on its own thread (the plugins call services synchronously from the GUI
    thread and wait for the answer, so the node must spin elsewhere, as in rqt)."""
    app = QApplication(sys.argv[:1])
    rclpy.init()
    node = rclpy.create_node(name)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()
    try:
        yield app, node
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown()


def pump(app: QApplication, seconds: float, until: Callable[[], bool] = lambda: False) -> bool:
    """Run the Qt event loop for at most `seconds`, or until `until()` holds (checked between events)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        app.processEvents()
        if until():
            return True
        time.sleep(0.05)
    return until()


def screenshot(
    app: QApplication,
    widget: QWidget,
    path: str,
    shown: Callable[[], None] = lambda: None,
    size: tuple[int, int] = (1000, 600),
) -> None:
    """Show the widget at a fixed size (small PNGs for the docs), let `shown` adjust it to that size (rqt_graph's
    fit-in-view), and save what it draws."""
    widget.resize(*size)
    widget.show()
    pump(app, 0.5)
    shown()
    pump(app, 0.5)
    widget.grab().save(path)

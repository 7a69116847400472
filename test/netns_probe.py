"""Run inside another network namespace: print every topic name discovered on a domain, as JSON."""

import json
import sys
import time

import rclpy
from rclpy.node import Node

rclpy.init(domain_id=int(sys.argv[1]))
node = Node("netns_probe")
deadline = time.time() + float(sys.argv[2])
seen: set[str] = set()
while time.time() < deadline:
    rclpy.spin_once(node, timeout_sec=0.2)
    seen |= {name for name, _ in node.get_topic_names_and_types()}
print(json.dumps(sorted(seen)), flush=True)

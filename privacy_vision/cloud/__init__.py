"""The cloud half: the ingest server, its store and the analyst dashboard. Nothing on the device imports it
(test_package.py checks that the edge modules load without it); the demo runner only starts it as a process."""

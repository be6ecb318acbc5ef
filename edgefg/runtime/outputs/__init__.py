"""What a run reports to: the one ``Output`` contract (:mod:`.contract`) and its implementations — JSONL and
video sinks, MQTT (with its spool), the HTTP server and live page, sighting snapshots, frame collection and
drift monitoring."""

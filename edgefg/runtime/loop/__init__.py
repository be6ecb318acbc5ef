"""The camera loop for N cameras (one source is N = 1): batching, decisions (smoothing, open-set),
sightings, per-camera stats and the events the outputs receive; the run's option sections."""

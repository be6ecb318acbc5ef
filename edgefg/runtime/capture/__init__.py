"""Where frames come from: sources (camera index, V4L2, RTSP/HTTP, video file, folder, GStreamer), the
reading thread with its retry policy and frame buffer, and camera configs (name + source + overrides)."""

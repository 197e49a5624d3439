"""herdtrace's analysis: recordings in, pandas DataFrames and summaries out.

The documented API (what the notebook and a user's own code may rely on):

- `load_recording(path)` / `load_recordings(paths)`: a `Recording` with four frames,
  `wakeups`, `accepts`, `connections`, `threads`, and the recording's `meta`.
- `summarize(rec)`: a typed `Summary`, whose `to_json()` is `herdtrace analyze --json`'s
  figures; `judge(rec)`: its verdict.
- `herd_wakeups(rec)`: the wakeups the herd figures count (the listener's).
- `per_thread(rec)`, `per_connection(rec)`: one row per worker, per connection.
- `grouped(recs, by_label)`, `combine(recs)`: several recordings of one label as one.
- `readable(frame, rec)`: a frame with times in µs from the start of the recording.
"""

from herdtrace.analysis.load import Recording, load_recording, load_recordings, readable
from herdtrace.analysis.metrics import (
    Summary,
    combine,
    grouped,
    herd_wakeups,
    per_connection,
    per_thread,
    summarize,
)
from herdtrace.analysis.verdict import judge

__all__ = ["Recording", "Summary", "combine", "grouped", "herd_wakeups", "judge", "load_recording",
           "load_recordings", "per_connection", "per_thread", "readable", "summarize"]

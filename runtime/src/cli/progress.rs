//! What `runtime run` and `resume` (local or `--server`) print on stderr
//! while a run goes on, read from the execution's events like any
//! follower's: a line per task started and finished, text plugins stream
//! (a line of its own per task), and how far each `for_each` has got:
//! items done, failed and in all, the rate and the time left, redrawn in
//! place on a terminal, a plain line at each tenth otherwise.

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::time::{Duration, Instant};

use super::run::{TaskNames, finished_line_in, report_of};
use orchestrator_engine::scheduler::{TaskRef, TaskStatus};
use orchestrator_engine::store::executions::{EventKind, LogEvent};

/// How often a live line is redrawn at most.
const REDRAW: Duration = Duration::from_millis(100);

/// The printer of one command's progress; the stream and the progress
/// lines share it so a streamed line is closed before the next line.
#[derive(Debug, Default)]
pub(super) struct Progress {
    /// Redraw a line in place (stderr is a terminal, people read it).
    live: bool,
    state: std::sync::Mutex<Printed>,
}

/// What the printer has printed so far.
#[derive(Debug, Default)]
struct Printed {
    /// The task whose streamed text is being printed, its line still open.
    streaming: Option<String>,
    /// Tasks whose start was printed (a `for_each` task starts with its
    /// first item).
    started: HashSet<String>,
    /// `for_each` tasks under way.
    fan_outs: HashMap<String, FanOut>,
    /// A live line is on the screen: cleared before the next line.
    drawn: bool,
}

/// How far one `for_each` has got.
#[derive(Debug)]
struct FanOut {
    items: usize,
    /// Finished before this run took it up.
    before: usize,
    done: usize,
    failed: usize,
    /// When its items started, ms since the epoch (event time).
    since: u64,
    /// The last tenth printed as a plain line.
    tenth: usize,
    redrawn: Option<Instant>,
}

impl FanOut {
    /// `3120/10000 items  2 failed  1530/s  ETA 4s`, as of `now` (ms).
    fn line(&self, now: u64) -> String {
        let finished = self.done + self.failed;
        let mut line = format!("{finished}/{} items", self.items);
        if self.failed > 0 {
            line.push_str(&format!("  {} failed", self.failed));
        }
        let elapsed = now.saturating_sub(self.since) as f64 / 1000.0;
        let here = finished.saturating_sub(self.before) as f64;
        if elapsed > 0.0 && here > 0.0 {
            let rate = here / elapsed;
            let left = self.items.saturating_sub(finished) as f64 / rate;
            line.push_str(&format!(
                "  {rate:.0}/s  ETA {}",
                humantime::format_duration(Duration::from_secs(left.ceil() as u64))
            ));
        }
        line
    }
}

impl Progress {
    /// A printer; `live` redraws `for_each` progress in place.
    pub(super) fn new(live: bool) -> Self {
        Self {
            live,
            state: std::sync::Mutex::default(),
        }
    }

    /// Prints what `event` says: a task of the workflow started (its first
    /// attempt, or its wait; a `for_each` with how many items) or finished,
    /// a `for_each` item finished (progress), or a plugin streamed text
    /// (other emitted kinds go to the log only).
    pub(super) fn event(&self, event: &LogEvent, tasks: &TaskNames) {
        let width = tasks.width;
        let mut printed = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let line = match &event.kind {
            EventKind::ItemsStarted {
                task,
                items,
                finished,
            } => {
                let Some(uses) = tasks.uses.get(task) else {
                    return;
                };
                printed.fan_outs.insert(
                    task.clone(),
                    FanOut {
                        items: *items,
                        before: *finished,
                        done: *finished,
                        failed: 0,
                        since: event.at,
                        tenth: 0,
                        redrawn: None,
                    },
                );
                if !printed.started.insert(task.clone()) {
                    return;
                }
                format!("  started  {task:width$}  {uses}  {items} items")
            }
            EventKind::AttemptStarted {
                task,
                attempt: 1,
                fallback: false,
            }
            | EventKind::WaitStarted { task, .. } => {
                let task = TaskRef::parse(task).task();
                match tasks.uses.get(task) {
                    Some(uses) if printed.started.insert(task.to_owned()) => {
                        format!("  started  {task:width$}  {uses}")
                    }
                    _ => return,
                }
            }
            EventKind::TaskFinished {
                task,
                status,
                error,
                end,
            } => {
                if let TaskRef::Item { task, .. } = TaskRef::parse(task) {
                    return self.item_finished(&mut printed, task, *status, event.at, width);
                }
                let Some(uses) = tasks.uses.get(task) else {
                    return;
                };
                let wall = printed
                    .fan_outs
                    .remove(task)
                    .map(|f| Duration::from_millis(event.at.saturating_sub(f.since)));
                let report = report_of(task, uses, *status, error, end.as_ref());
                finished_line_in(&report, width, wall)
            }
            EventKind::Emitted {
                task, kind, data, ..
            } if kind == "text" => return stream_text(&mut printed, task, data),
            _ => return,
        };
        print_line(&mut printed, &line);
    }

    /// Counts a `for_each` item that finished and shows how far its task
    /// has got: redrawn at most every 100 ms on a terminal, else a line at
    /// each tenth of the items.
    fn item_finished(
        &self,
        printed: &mut Printed,
        task: &str,
        status: TaskStatus,
        at: u64,
        width: usize,
    ) {
        let Some(fan_out) = printed.fan_outs.get_mut(task) else {
            return;
        };
        if status == TaskStatus::Failed {
            fan_out.failed += 1;
        } else {
            fan_out.done += 1;
        }
        let finished = fan_out.done + fan_out.failed;
        let all = finished >= fan_out.items;
        if self.live {
            let due = fan_out.redrawn.is_none_or(|at| at.elapsed() >= REDRAW);
            if !(due || all) {
                return;
            }
            fan_out.redrawn = Some(Instant::now());
            let line = format!("    items  {task:width$}  {}", fan_out.line(at));
            let mut stderr = std::io::stderr().lock();
            let open = if printed.streaming.take().is_some() {
                "\n"
            } else {
                ""
            };
            let _ = write!(stderr, "{open}\r\x1b[2K{line}");
            let _ = stderr.flush();
            printed.drawn = true;
            return;
        }
        let tenth = finished * 10 / fan_out.items.max(1);
        if tenth <= fan_out.tenth {
            return;
        }
        fan_out.tenth = tenth;
        let line = format!("    items  {task:width$}  {}", fan_out.line(at));
        print_line(printed, &line);
    }
}

/// Prints `line` on a line of its own: after a streamed line or over a
/// live one.
fn print_line(printed: &mut Printed, line: &str) {
    let open = if printed.streaming.take().is_some() {
        "\n"
    } else if std::mem::take(&mut printed.drawn) {
        "\r\x1b[2K"
    } else {
        ""
    };
    // Progress is best effort: a closed stderr must not stop the run.
    let _ = writeln!(std::io::stderr(), "{open}{line}");
}

/// Prints text a plugin streamed as it arrives.
fn stream_text(printed: &mut Printed, task: &str, data: &str) {
    let mut stderr = std::io::stderr().lock();
    if printed.streaming.as_deref() != Some(task) {
        let open = if printed.streaming.is_some() {
            "\n"
        } else if std::mem::take(&mut printed.drawn) {
            "\r\x1b[2K"
        } else {
            ""
        };
        let _ = write!(stderr, "{open}   stream  {task}  ");
        printed.streaming = Some(task.to_owned());
    }
    let _ = write!(stderr, "{}", data.replace('\n', "\n           "));
    let _ = stderr.flush();
}

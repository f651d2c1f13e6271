//! Listing executions: a page at a time, newest first, filtered by status,
//! workflow and start time, continued from an opaque cursor. Every backend
//! answers [`ListQuery`] from an index, not by reading each execution.

use serde::{Deserialize, Serialize};

use orchestrator_core::scheduler::Consumption;

use super::{DeadLetter, DeadLetterState, ExecutionRecord, ExecutionStatus};

/// One execution, as a listing shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The id.
    pub id: String,
    /// The workflow's name.
    pub workflow: String,
    /// Where it stands, as recorded (`running` also for one whose owner
    /// died: the engine tells those apart).
    pub status: ExecutionStatus,
    /// When it started, ms since the epoch.
    pub created_at: u64,
    /// When it finished, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<u64>,
    /// The parent execution, for a sub-workflow's run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// What it consumed, once it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumed: Option<Consumption>,
    /// Its open dead letters (none for a sub-workflow's run: its failure
    /// is its parent task's letter).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dead_letters: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Summary {
    /// The summary of `record`.
    pub fn of(record: &ExecutionRecord) -> Self {
        Self {
            id: record.id.clone(),
            workflow: record.workflow.clone(),
            status: record.status,
            created_at: record.created_at,
            finished_at: record.finished_at,
            parent: record.parent.as_ref().map(|p| p.execution.clone()),
            consumed: record.consumed,
            dead_letters: 0,
        }
    }

    /// The summary of `record` whose execution keeps `letters`.
    pub fn with_letters(record: &ExecutionRecord, letters: &[DeadLetter]) -> Self {
        let open = letters
            .iter()
            .filter(|l| l.state == DeadLetterState::Open)
            .count();
        Self {
            dead_letters: if record.parent.is_some() {
                0
            } else {
                u32::try_from(open).unwrap_or(u32::MAX)
            },
            ..Self::of(record)
        }
    }

    /// Where it sorts: newest first, then by id.
    pub fn position(&self) -> Position {
        Position {
            created_at: self.created_at,
            id: self.id.clone(),
        }
    }

    /// Whether `query`'s filters (not its cursor) let it through.
    pub fn matches(&self, query: &ListQuery) -> bool {
        query.status.is_none_or(|s| s == self.status)
            && query.workflow.as_ref().is_none_or(|w| *w == self.workflow)
            && query.since.is_none_or(|t| self.created_at >= t)
            && query.until.is_none_or(|t| self.created_at < t)
            && (query.children || self.parent.is_none())
    }
}

/// Where a listing stands: the start time and id of the last execution a
/// page held. Listings go from newest to oldest.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    /// Its start time, ms since the epoch.
    pub created_at: u64,
    /// Its id.
    pub id: String,
}

impl Position {
    /// The opaque cursor a client passes back for the next page.
    pub fn cursor(&self) -> String {
        format!("{:016x}{}", self.created_at, self.id)
    }

    /// The position a cursor names; `None` if it is not one.
    pub fn from_cursor(cursor: &str) -> Option<Self> {
        let (time, id) = (cursor.get(..16)?, cursor.get(16..)?);
        Some(Self {
            created_at: u64::from_str_radix(time, 16).ok()?,
            id: id.to_owned(),
        })
        .filter(|p| super::valid_id(&p.id))
    }
}

/// Which executions to list.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Only those in this status.
    pub status: Option<ExecutionStatus>,
    /// Only runs of this workflow.
    pub workflow: Option<String>,
    /// Only those started at or after this time, ms since the epoch.
    pub since: Option<u64>,
    /// Only those started before this time.
    pub until: Option<u64>,
    /// Sub-workflow runs too (left out by default).
    pub children: bool,
    /// Continue after this position (the previous page's `next`).
    pub after: Option<Position>,
    /// At most this many (at least 1; a backend may cap it).
    pub limit: usize,
}

impl ListQuery {
    /// Where the listing stops, exclusive: the older of `until` and the
    /// cursor (`None`: no bound).
    pub fn upper(&self) -> Option<Position> {
        let until = self.until.map(|created_at| Position {
            created_at,
            id: String::new(),
        });
        match (&self.after, until) {
            (Some(after), Some(until)) => Some(after.clone().min(until)),
            (Some(after), None) => Some(after.clone()),
            (None, until) => until,
        }
    }
}

/// Most executions one page holds.
pub const MAX_PAGE: usize = 1000;

/// One page of a listing.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// The executions, newest first.
    pub items: Vec<Summary>,
    /// Where the next page starts, if there may be one.
    pub next: Option<Position>,
}

/// Pages through `summaries` (newest first, all positions after
/// `query.after`): what a backend's index scan feeds.
pub fn page(query: &ListQuery, summaries: impl Iterator<Item = Summary>) -> Page {
    let limit = query.limit.clamp(1, MAX_PAGE);
    let mut items = Vec::new();
    for summary in summaries.filter(|s| s.matches(query)) {
        if items.len() == limit {
            let next = items.last().map(Summary::position);
            return Page { items, next };
        }
        items.push(summary);
    }
    Page { items, next: None }
}

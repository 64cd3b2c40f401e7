//! The replicated log entry format: what the leader proposes and every node applies.
//!
//! Entries are JSON with a version field (`v`), so a log viewer can show them and a newer node
//! can refuse an entry it does not understand instead of misapplying it. Statement text is
//! stored as it will run (after the determinism rewrite), with the statement context that makes
//! the engine's own non-determinism repeatable.

use serde::{Deserialize, Serialize};

use super::context::StatementContext;
use crate::cluster::contract::NodeId;

/// Newest entry format version this node writes and understands. An entry records the lowest
/// version that can read it: 2 only for `EntryBody::Txns`, so nodes of version 1 keep
/// applying everything else.
pub const ENTRY_VERSION: u32 = 2;

/// The client session a statement came from: node and session id on that node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Origin {
    pub node: NodeId,
    pub session: u64,
}

/// What a statement did on the leader (or on a node applying it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// 0 when the statement succeeded.
    pub error: u16,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sqlstate: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    pub affected: u64,
    #[serde(default)]
    pub last_insert_id: u64,
    #[serde(default)]
    pub warnings: u16,
}

impl Outcome {
    /// The parts every node must agree on (error code and affected rows).
    pub fn agrees_with(&self, other: &Outcome) -> bool {
        self.error == other.error && self.affected == other.affected
    }
}

/// One statement with its context and the leader's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedStatement {
    pub sql: String,
    pub ctx: StatementContext,
    /// The leader's outcome (`None` for DDL, which runs only when applied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
}

/// A transaction executed on the leader inside `XA START … XA PREPARE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnEntry {
    /// The XA transaction id on the leader's engine.
    pub xid: String,
    pub origin: Origin,
    /// Capability flags of the origin client (`CLIENT_FOUND_ROWS` changes affected-row counts).
    pub client_caps: u32,
    pub statements: Vec<LoggedStatement>,
}

/// A statement that cannot run inside XA (DDL): proposed first, executed by every node when
/// applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DdlEntry {
    pub origin: Origin,
    pub client_caps: u32,
    pub statement: LoggedStatement,
}

/// The payload of one log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EntryBody {
    Txn(TxnEntry),
    /// Transactions that were committing at the same time, in the order they are applied
    /// (one log entry: one sync and one replication round for all of them). Each is still
    /// its own engine transaction.
    Txns {
        txns: Vec<TxnEntry>,
    },
    Ddl(Box<DdlEntry>),
    /// Proposed by a node when it becomes leader: everything an earlier leader got committed is
    /// before it, so prepared XA transactions of earlier terms that were not applied by now
    /// never will be.
    Barrier {
        leader: NodeId,
        nonce: u64,
    },
    /// The leader's outcome of the DDL entry at `ddl_index`, for followers to compare with
    /// theirs (DDL runs only when applied, so its entry cannot carry it).
    DdlOutcome {
        ddl_index: u64,
        outcome: Outcome,
    },
    /// Ends an origin session's applier connection (its temporary tables and variables).
    SessionEnd {
        origin: Origin,
    },
}

/// A versioned log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    pub v: u32,
    #[serde(flatten)]
    pub body: EntryBody,
}

#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    #[error("entry format version {0} is newer than this node understands ({ENTRY_VERSION})")]
    Version(u32),
    #[error("malformed entry: {0}")]
    Malformed(String),
}

impl LogEntry {
    pub fn new(body: EntryBody) -> Self {
        let v = match body {
            EntryBody::Txns { .. } => 2,
            _ => 1,
        };
        LogEntry { v, body }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, EntryError> {
        #[derive(Deserialize)]
        struct Head {
            v: u32,
        }
        let head: Head =
            serde_json::from_slice(bytes).map_err(|e| EntryError::Malformed(e.to_string()))?;
        if head.v > ENTRY_VERSION {
            return Err(EntryError::Version(head.v));
        }
        serde_json::from_slice(bytes).map_err(|e| EntryError::Malformed(e.to_string()))
    }
}

/// What applying an entry returned to the proposer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ApplyReply {
    /// Applied; for DDL the outcome on this node.
    Applied {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        outcome: Option<Outcome>,
    },
    /// Already applied before (a replay after restart).
    Duplicate,
    /// This node has diverged and no longer applies entries.
    Diverged { reason: String },
}

impl ApplyReply {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_newer_versions_are_refused() {
        let e = LogEntry::new(EntryBody::Barrier {
            leader: 2,
            nonce: 9,
        });
        let bytes = e.encode();
        assert_eq!(LogEntry::decode(&bytes).unwrap(), e);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains("\"kind\":\"barrier\""), "{text}");
        let newer = text.replace("\"v\":1", "\"v\":99");
        assert!(matches!(
            LogEntry::decode(newer.as_bytes()),
            Err(EntryError::Version(99))
        ));
        assert!(LogEntry::decode(b"{").is_err());
    }

    #[test]
    fn only_grouped_transactions_need_version_2() {
        let txn = TxnEntry {
            xid: "sdb-1-x-1".into(),
            origin: Origin {
                node: 1,
                session: 7,
            },
            client_caps: 0,
            statements: Vec::new(),
        };
        let single = LogEntry::new(EntryBody::Txn(txn.clone()));
        assert_eq!(single.v, 1);
        let group = LogEntry::new(EntryBody::Txns {
            txns: vec![txn.clone(), txn],
        });
        assert_eq!(group.v, 2);
        let bytes = group.encode();
        assert!(String::from_utf8_lossy(&bytes).contains("\"kind\":\"txns\""));
        assert_eq!(LogEntry::decode(&bytes).unwrap(), group);
    }
}

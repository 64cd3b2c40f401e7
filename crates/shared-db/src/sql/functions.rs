//! What the classifier knows about built-in functions and about words that may precede `(`.
//!
//! A name followed by `(` that is in neither table is treated as a stored function / UDF
//! call (which may write), so the tables only need to be correct, not complete: a missing
//! built-in just costs a full parse and, at worst, routes a read to the leader. Only list
//! names that are built-ins (or reserved words) in MariaDB / MySQL: built-ins shadow stored
//! functions of the same name, so listing a non-built-in could let a writing stored function
//! run on a replica.

/// How a built-in function affects routing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FnClass {
    /// Read-only and deterministic enough for a replica.
    Pure,
    /// Read-only but its result depends on the server, time or randomness.
    Nondet,
    /// Read-only but its result depends on the previous statement of the same connection
    /// (`FOUND_ROWS()`, `ROW_COUNT()`).
    Previous,
    /// `LAST_INSERT_ID()`: must run where the insert ran.
    LastInsertId,
    /// Must run on the leader: locks, sequences, server files, replication waits.
    Leader,
}

use FnClass::*;

/// Built-in functions, sorted by name (checked by a test). The bool marks functions whose
/// result is non-deterministic (reported in `Classification::nondeterministic`).
const FUNCTIONS: &[(&str, FnClass, bool)] = &[
    ("abs", Pure, false),
    ("acos", Pure, false),
    ("adddate", Pure, false),
    ("addtime", Pure, false),
    ("aes_decrypt", Pure, false),
    ("aes_encrypt", Pure, false),
    ("any_value", Pure, false),
    ("ascii", Pure, false),
    ("asin", Pure, false),
    ("atan", Pure, false),
    ("atan2", Pure, false),
    ("avg", Pure, false),
    ("benchmark", Pure, false),
    ("bin", Pure, false),
    ("binary", Pure, false),
    ("bit_and", Pure, false),
    ("bit_count", Pure, false),
    ("bit_length", Pure, false),
    ("bit_or", Pure, false),
    ("bit_xor", Pure, false),
    ("cast", Pure, false),
    ("ceil", Pure, false),
    ("ceiling", Pure, false),
    ("char", Pure, false),
    ("char_length", Pure, false),
    ("character_length", Pure, false),
    ("charset", Pure, false),
    ("coalesce", Pure, false),
    ("coercibility", Pure, false),
    ("collation", Pure, false),
    ("compress", Pure, false),
    ("concat", Pure, false),
    ("concat_ws", Pure, false),
    ("connection_id", Nondet, true),
    ("conv", Pure, false),
    ("convert", Pure, false),
    ("convert_tz", Pure, false),
    ("cos", Pure, false),
    ("cot", Pure, false),
    ("count", Pure, false),
    ("crc32", Pure, false),
    ("cume_dist", Pure, false),
    ("curdate", Nondet, true),
    ("current_date", Nondet, true),
    ("current_role", Nondet, true),
    ("current_time", Nondet, true),
    ("current_timestamp", Nondet, true),
    ("current_user", Nondet, true),
    ("curtime", Nondet, true),
    ("database", Pure, false),
    ("date", Pure, false),
    ("date_add", Pure, false),
    ("date_format", Pure, false),
    ("date_sub", Pure, false),
    ("datediff", Pure, false),
    ("day", Pure, false),
    ("dayname", Pure, false),
    ("dayofmonth", Pure, false),
    ("dayofweek", Pure, false),
    ("dayofyear", Pure, false),
    ("degrees", Pure, false),
    ("dense_rank", Pure, false),
    ("elt", Pure, false),
    ("exp", Pure, false),
    ("export_set", Pure, false),
    ("extract", Pure, false),
    ("field", Pure, false),
    ("find_in_set", Pure, false),
    ("first_value", Pure, false),
    ("floor", Pure, false),
    ("format", Pure, false),
    ("found_rows", Previous, true),
    ("from_base64", Pure, false),
    ("from_days", Pure, false),
    ("from_unixtime", Pure, false),
    ("get_format", Pure, false),
    ("get_lock", Leader, true),
    ("greatest", Pure, false),
    ("group_concat", Pure, false),
    ("grouping", Pure, false),
    ("hex", Pure, false),
    ("hour", Pure, false),
    ("if", Pure, false),
    ("ifnull", Pure, false),
    ("inet6_aton", Pure, false),
    ("inet6_ntoa", Pure, false),
    ("inet_aton", Pure, false),
    ("inet_ntoa", Pure, false),
    ("insert", Pure, false),
    ("instr", Pure, false),
    ("interval", Pure, false),
    ("is_free_lock", Leader, true),
    ("is_ipv4", Pure, false),
    ("is_ipv6", Pure, false),
    ("is_used_lock", Leader, true),
    ("isnull", Pure, false),
    ("json_array", Pure, false),
    ("json_arrayagg", Pure, false),
    ("json_contains", Pure, false),
    ("json_contains_path", Pure, false),
    ("json_depth", Pure, false),
    ("json_extract", Pure, false),
    ("json_insert", Pure, false),
    ("json_keys", Pure, false),
    ("json_length", Pure, false),
    ("json_merge", Pure, false),
    ("json_merge_patch", Pure, false),
    ("json_merge_preserve", Pure, false),
    ("json_object", Pure, false),
    ("json_objectagg", Pure, false),
    ("json_quote", Pure, false),
    ("json_remove", Pure, false),
    ("json_replace", Pure, false),
    ("json_search", Pure, false),
    ("json_set", Pure, false),
    ("json_table", Pure, false),
    ("json_type", Pure, false),
    ("json_unquote", Pure, false),
    ("json_valid", Pure, false),
    ("json_value", Pure, false),
    ("lag", Pure, false),
    ("last_day", Pure, false),
    ("last_insert_id", LastInsertId, false),
    ("last_value", Pure, false),
    ("lastval", Leader, false),
    ("lcase", Pure, false),
    ("lead", Pure, false),
    ("least", Pure, false),
    ("left", Pure, false),
    ("length", Pure, false),
    ("ln", Pure, false),
    ("load_file", Leader, true),
    ("localtime", Nondet, true),
    ("localtimestamp", Nondet, true),
    ("locate", Pure, false),
    ("log", Pure, false),
    ("log10", Pure, false),
    ("log2", Pure, false),
    ("lower", Pure, false),
    ("lpad", Pure, false),
    ("ltrim", Pure, false),
    ("make_set", Pure, false),
    ("makedate", Pure, false),
    ("maketime", Pure, false),
    ("master_gtid_wait", Leader, false),
    ("master_pos_wait", Leader, false),
    ("max", Pure, false),
    ("md5", Pure, false),
    ("microsecond", Pure, false),
    ("mid", Pure, false),
    ("min", Pure, false),
    ("minute", Pure, false),
    ("mod", Pure, false),
    ("month", Pure, false),
    ("monthname", Pure, false),
    ("nextval", Leader, false),
    ("now", Nondet, true),
    ("nth_value", Pure, false),
    ("ntile", Pure, false),
    ("nullif", Pure, false),
    ("oct", Pure, false),
    ("octet_length", Pure, false),
    ("ord", Pure, false),
    ("percent_rank", Pure, false),
    ("period_add", Pure, false),
    ("period_diff", Pure, false),
    ("pi", Pure, false),
    ("position", Pure, false),
    ("pow", Pure, false),
    ("power", Pure, false),
    ("quarter", Pure, false),
    ("quote", Pure, false),
    ("radians", Pure, false),
    ("rand", Nondet, true),
    ("random_bytes", Nondet, true),
    ("rank", Pure, false),
    ("regexp_instr", Pure, false),
    ("regexp_replace", Pure, false),
    ("regexp_substr", Pure, false),
    ("release_all_locks", Leader, true),
    ("release_lock", Leader, true),
    ("repeat", Pure, false),
    ("replace", Pure, false),
    ("reverse", Pure, false),
    ("right", Pure, false),
    ("round", Pure, false),
    ("row_count", Previous, true),
    ("row_number", Pure, false),
    ("rpad", Pure, false),
    ("rtrim", Pure, false),
    ("sec_to_time", Pure, false),
    ("second", Pure, false),
    ("session_user", Nondet, true),
    ("setval", Leader, false),
    ("sha", Pure, false),
    ("sha1", Pure, false),
    ("sha2", Pure, false),
    ("sign", Pure, false),
    ("sin", Pure, false),
    ("sleep", Nondet, true),
    ("soundex", Pure, false),
    ("source_pos_wait", Leader, false),
    ("space", Pure, false),
    ("sqrt", Pure, false),
    ("std", Pure, false),
    ("stddev", Pure, false),
    ("stddev_pop", Pure, false),
    ("stddev_samp", Pure, false),
    ("str_to_date", Pure, false),
    ("strcmp", Pure, false),
    ("subdate", Pure, false),
    ("substr", Pure, false),
    ("substring", Pure, false),
    ("substring_index", Pure, false),
    ("subtime", Pure, false),
    ("sum", Pure, false),
    ("sysdate", Nondet, true),
    ("system_user", Nondet, true),
    ("tan", Pure, false),
    ("time", Pure, false),
    ("time_format", Pure, false),
    ("time_to_sec", Pure, false),
    ("timediff", Pure, false),
    ("timestamp", Pure, false),
    ("timestampadd", Pure, false),
    ("timestampdiff", Pure, false),
    ("to_base64", Pure, false),
    ("to_days", Pure, false),
    ("to_seconds", Pure, false),
    ("trim", Pure, false),
    ("truncate", Pure, false),
    ("ucase", Pure, false),
    ("uncompress", Pure, false),
    ("uncompressed_length", Pure, false),
    ("unhex", Pure, false),
    ("unix_timestamp", Nondet, true),
    ("upper", Pure, false),
    ("user", Nondet, true),
    ("utc_date", Nondet, true),
    ("utc_time", Nondet, true),
    ("utc_timestamp", Nondet, true),
    ("uuid", Nondet, true),
    ("uuid_short", Nondet, true),
    ("var_pop", Pure, false),
    ("var_samp", Pure, false),
    ("variance", Pure, false),
    ("version", Pure, false),
    ("wait_for_executed_gtid_set", Leader, false),
    ("week", Pure, false),
    ("weekday", Pure, false),
    ("weekofyear", Pure, false),
    ("weight_string", Pure, false),
    ("year", Pure, false),
    ("yearweek", Pure, false),
];

/// Words that may be followed by `(` without being a function call (`IN (`, `AS (`,
/// `DECIMAL(10,2)`, `USE INDEX (`, `ROW(1, 2)`...). They are reserved words, or (`row`) words
/// the grammar itself handles before `(`, so an unquoted, unqualified stored function cannot
/// have these names. Sorted (checked by a test).
const PAREN_KEYWORDS: &[&str] = &[
    "against",
    "all",
    "and",
    "as",
    "between",
    "by",
    "case",
    "decimal",
    "distinct",
    "div",
    "double",
    "else",
    "except",
    "exists",
    "float",
    "for",
    "from",
    "having",
    "in",
    "index",
    "int",
    "integer",
    "intersect",
    "is",
    "join",
    "key",
    "lateral",
    "like",
    "match",
    "not",
    "numeric",
    "of",
    "on",
    "or",
    "over",
    "partition",
    "real",
    "recursive",
    "regexp",
    "rlike",
    "row",
    "select",
    "then",
    "union",
    "unsigned",
    "using",
    "values",
    "varbinary",
    "varchar",
    "when",
    "where",
    "window",
    "with",
    "xor",
];

/// Built-ins that can be called without parentheses (`CURRENT_USER`, `NOW` needs them).
const PARENLESS: &[&str] = &[
    "current_date",
    "current_role",
    "current_time",
    "current_timestamp",
    "current_user",
    "localtime",
    "localtimestamp",
    "utc_date",
    "utc_time",
    "utc_timestamp",
];

/// What a lowercase-able name followed by `(` is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Callee {
    pub class: FnClass,
    /// Canonical lowercase name, when the function is non-deterministic.
    pub nondet: Option<&'static str>,
}

/// Looks up `name` (any case) followed by `(`: `None` means unknown (stored function / UDF).
pub(crate) fn lookup_call(name: &str) -> Option<Callee> {
    let mut buf = [0u8; 32];
    let lower = lowercase(name, &mut buf)?;
    if let Ok(i) = FUNCTIONS.binary_search_by(|(n, _, _)| n.as_bytes().cmp(lower)) {
        let (n, class, nondet) = FUNCTIONS[i];
        return Some(Callee {
            class,
            nondet: nondet.then_some(n),
        });
    }
    PAREN_KEYWORDS
        .binary_search_by(|n| n.as_bytes().cmp(lower))
        .ok()
        .map(|_| Callee {
            class: Pure,
            nondet: None,
        })
}

/// Looks up a word *not* followed by `(` that is nevertheless a function call
/// (`CURRENT_USER`); returns its canonical name.
pub(crate) fn lookup_parenless(name: &str) -> Option<&'static str> {
    // All of them start with `c`, `l` or `u` and are at least 8 bytes long: skip the rest
    // cheaply (this runs for every word of every statement).
    let first = name.as_bytes().first()?.to_ascii_lowercase();
    if name.len() < 8 || !matches!(first, b'c' | b'l' | b'u') {
        return None;
    }
    let mut buf = [0u8; 32];
    let lower = lowercase(name, &mut buf)?;
    PARENLESS
        .binary_search_by(|n| n.as_bytes().cmp(lower))
        .ok()
        .map(|i| PARENLESS[i])
}

/// Lowercases an ASCII `name` into `buf`; `None` if it is too long or not ASCII.
pub(crate) fn lowercase<'b>(name: &str, buf: &'b mut [u8; 32]) -> Option<&'b [u8]> {
    let bytes = name.as_bytes();
    if bytes.len() > buf.len() {
        return None;
    }
    for (o, &b) in buf.iter_mut().zip(bytes) {
        if !b.is_ascii() {
            return None;
        }
        *o = b.to_ascii_lowercase();
    }
    Some(&buf[..bytes.len()])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_sorted(names: &[&str]) -> bool {
        names.windows(2).all(|w| w[0] < w[1])
    }

    #[test]
    fn tables_are_sorted_and_lowercase() {
        let fns: Vec<&str> = FUNCTIONS.iter().map(|f| f.0).collect();
        for table in [&fns[..], PAREN_KEYWORDS, PARENLESS] {
            assert!(is_sorted(table), "{table:?}");
            assert!(table.iter().all(|n| n.to_ascii_lowercase() == *n));
        }
    }

    #[test]
    fn lookups() {
        assert_eq!(lookup_call("COUNT").map(|c| c.class), Some(Pure));
        assert_eq!(lookup_call("Get_Lock").map(|c| c.class), Some(Leader));
        assert_eq!(lookup_call("uuid").and_then(|c| c.nondet), Some("uuid"));
        assert_eq!(lookup_call("IN").map(|c| c.class), Some(Pure));
        assert_eq!(lookup_call("my_udf"), None);
        assert_eq!(lookup_call(&"x".repeat(100)), None);
        assert_eq!(lookup_parenless("CURRENT_USER"), Some("current_user"));
        assert_eq!(lookup_parenless("now"), None);
    }
}

//! Someone else's results table for `moegrad fit`: JSON lines or CSV, its own column names
//! mapped onto the roles a law needs (`--columns params=N,tokens=D,loss=L`), tokens derived
//! from training FLOPs where a table gives only those (D = C / 6N), and rows selected by
//! `--filter`. Only the columns the chosen law needs are required; a missing column, an
//! empty cell, a text or a number no law takes (NaN, infinite, not positive) and a column
//! named twice are refused naming the line and the column.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};

use crate::research::fit::Row;

/// Each role a table's columns can play, and the names looked for when `--columns` does
/// not name one (moegrad's `results.jsonl` and the Gemstones release use the first).
pub const ROLES: [(&str, &[&str]); 8] = [
    ("params", &["params_active_precise", "params"]),
    ("non_embedding_params", &["non_embedding_params"]),
    ("tokens", &["tokens"]),
    ("loss", &["final_loss", "loss"]),
    ("width", &["width"]),
    ("depth", &["depth"]),
    ("flops", &["flops"]),
    ("run_name", &["run_name", "name"]),
];

/// `column<value` or `column>value`: keeps the rows whose value is below (above) `value`.
/// The column is a role (`params`) or any of the table's own columns.
#[derive(Clone, Debug, PartialEq)]
pub struct Filter {
    pub column: String,
    pub below: bool,
    pub value: f64,
}

impl std::str::FromStr for Filter {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Filter> {
        let (at, below) = match (s.find('<'), s.find('>')) {
            (Some(i), None) => (i, true),
            (None, Some(i)) => (i, false),
            _ => bail!("--filter {s:?}: expected COLUMN<VALUE or COLUMN>VALUE"),
        };
        let (column, value) = (s[..at].trim(), s[at + 1..].trim());
        let value: f64 = value.parse().map_err(|_| anyhow!("--filter {s:?}: {value:?} is not a number"))?;
        if column.is_empty() {
            bail!("--filter {s:?}: no column before the comparison");
        }
        Ok(Filter { column: column.to_string(), below, value })
    }
}

/// How to read a table.
#[derive(Clone, Debug, Default)]
pub struct TableOptions {
    /// Role -> the table's own column name.
    pub columns: BTreeMap<String, String>,
    /// Tokens = FLOPs / (6 params), for tables that give training FLOPs only.
    pub tokens_from_flops: bool,
    pub filters: Vec<Filter>,
}

/// `params=Model size,loss=Final loss`: each role to its column. Unknown roles are refused.
pub fn parse_columns(spec: &str) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (role, column) = part.split_once('=').ok_or_else(|| anyhow!("--columns: {part:?} is not ROLE=COLUMN"))?;
        let role = role.trim();
        if !ROLES.iter().any(|(r, _)| *r == role) {
            let known: Vec<&str> = ROLES.iter().map(|(r, _)| *r).collect();
            bail!("--columns: unknown role {role:?} (the roles are {})", known.join(", "));
        }
        out.insert(role.to_string(), column.trim().to_string());
    }
    Ok(out)
}

/// A table's cells as text, by column, with each record's line in the file.
struct Table {
    columns: Vec<String>,
    records: Vec<(u64, HashMap<String, String>)>,
}

fn read_csv(path: &Path) -> Result<Table> {
    let mut reader = csv::Reader::from_path(path).with_context(|| format!("cannot read {}", path.display()))?;
    let columns: Vec<String> = reader.headers().with_context(|| format!("{}: no header line", path.display()))?.iter().map(|h| h.trim().to_string()).collect();
    if let Some(twice) = columns.iter().enumerate().find(|(i, c)| columns[..*i].contains(c)).map(|(_, c)| c) {
        bail!("{}: the header names column {twice:?} twice; rename one so that it is clear which to read", path.display());
    }
    let mut records = Vec::new();
    for record in reader.records() {
        let record = record.with_context(|| format!("{}: malformed CSV", path.display()))?;
        let line = record.position().map_or(0, |p| p.line());
        records.push((line, columns.iter().cloned().zip(record.iter().map(|c| c.trim().to_string())).collect()));
    }
    Ok(Table { columns, records })
}

fn read_jsonl(path: &Path) -> Result<Table> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let (mut columns, mut records) = (Vec::<String>::new(), Vec::new());
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).with_context(|| format!("{}: line {}: not JSON", path.display(), i + 1))?;
        if !v.is_object() {
            bail!("{}: line {}: not a JSON object", path.display(), i + 1);
        }
        // Read again keeping every key: serde_json's map would keep the last of two alike.
        let Entries(object) = serde_json::from_str(line).with_context(|| format!("{}: line {}: not JSON", path.display(), i + 1))?;
        if let Some(twice) = object.iter().enumerate().find(|(j, (k, _))| object[..*j].iter().any(|(o, _)| o == k)).map(|(_, (k, _))| k) {
            bail!("{}: line {}: the object names {twice:?} twice; rename one so that it is clear which to read", path.display(), i + 1);
        }
        let mut cells = HashMap::new();
        for (k, v) in &object {
            if !columns.contains(k) {
                columns.push(k.clone());
            }
            let text = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => String::new(),
                other => other.to_string(),
            };
            cells.insert(k.clone(), text);
        }
        records.push(((i + 1) as u64, cells));
    }
    Ok(Table { columns, records })
}

/// A JSON object's entries in their order, keys named twice kept.
struct Entries(Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for Entries {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Entries, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Entries;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> std::result::Result<Entries, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(Visit)
    }
}

/// The roles a law over `variables` needs, besides the loss.
fn needed_roles(variables: &[&str], options: &TableOptions) -> Vec<&'static str> {
    let mut needed: Vec<&'static str> = vec!["loss"];
    for v in variables {
        let role = ROLES.iter().map(|(r, _)| *r).find(|r| r == v).expect("a law's variables are roles");
        if role == "tokens" && options.tokens_from_flops {
            needed.extend(["flops", "params"]);
        } else {
            needed.push(role);
        }
    }
    needed.dedup();
    needed
}

/// The rows of `path` (`.csv`, or JSON lines otherwise) for a law over `variables` (role
/// names: `params`, `non_embedding_params`, `tokens`, `width`, `depth`).
pub fn read_table(path: &Path, variables: &[&str], options: &TableOptions) -> Result<Vec<Row>> {
    let is_csv = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    let table = if is_csv { read_csv(path)? } else { read_jsonl(path)? };
    let file = path.display();
    let listing = || table.columns.iter().map(|c| format!("{c:?}")).collect::<Vec<_>>().join(", ");
    // Each role's column: as mapped (and then it must exist), or the first default present.
    let mut column_of: HashMap<&str, String> = HashMap::new();
    for (role, defaults) in ROLES {
        match options.columns.get(role) {
            Some(name) if table.columns.contains(name) => {
                column_of.insert(role, name.clone());
            }
            Some(name) => bail!("{file}: --columns {role}={name}: the table has no column {name:?} (it has {})", listing()),
            None => {
                if let Some(name) = defaults.iter().find(|d| table.columns.iter().any(|c| c == *d)) {
                    column_of.insert(role, name.to_string());
                }
            }
        }
    }
    let needed = needed_roles(variables, options);
    for role in &needed {
        if !column_of.contains_key(role) {
            let defaults = ROLES.iter().find(|(r, _)| r == role).map_or(&[][..], |(_, d)| *d);
            bail!("{file}: no column for {role} (looked for {defaults:?}; it has {}); name it with --columns {role}=<column>", listing());
        }
    }
    let filter_columns: Vec<String> = options
        .filters
        .iter()
        .map(|f| match column_of.get(f.column.as_str()) {
            Some(c) => Ok(c.clone()),
            None if table.columns.contains(&f.column) => Ok(f.column.clone()),
            None => bail!("{file}: --filter on {:?}: no such column or role (the table has {})", f.column, listing()),
        })
        .collect::<Result<_>>()?;
    let mut rows = Vec::new();
    'records: for (line, cells) in &table.records {
        let number = |column: &str, role: &str| -> Result<Option<f64>> {
            let text = cells.get(column).map_or("", String::as_str);
            if text.is_empty() {
                return Ok(None);
            }
            let v: f64 = text.parse().map_err(|_| anyhow!("{file}: line {line}: column {column:?} ({role}) holds {text:?}, not a number"))?;
            if !v.is_finite() {
                bail!("{file}: line {line}: column {column:?} ({role}) holds {text:?}, not a finite number");
            }
            Ok(Some(v))
        };
        for (f, column) in options.filters.iter().zip(&filter_columns) {
            let v = number(column, "filtered")?.ok_or_else(|| anyhow!("{file}: line {line}: column {column:?} (filtered) is empty"))?;
            if (f.below && v >= f.value) || (!f.below && v <= f.value) {
                continue 'records;
            }
        }
        let value = |role: &str| -> Result<f64> {
            let Some(column) = column_of.get(role) else { return Ok(f64::NAN) };
            match number(column, role)? {
                // Every quantity a law takes the logarithm of is positive.
                Some(v) if v <= 0.0 && needed.contains(&role) => bail!("{file}: line {line}: column {column:?} ({role}) holds {v}; a {role} must be positive"),
                Some(v) => Ok(v),
                None if needed.contains(&role) => bail!("{file}: line {line}: column {column:?} ({role}) is empty"),
                None => Ok(f64::NAN),
            }
        };
        let (params, loss, flops) = (value("params")?, value("loss")?, value("flops")?);
        let tokens = if options.tokens_from_flops { flops / (6.0 * params) } else { value("tokens")? };
        rows.push(Row {
            run_name: column_of.get("run_name").and_then(|c| cells.get(c)).cloned().unwrap_or_else(|| format!("line {line}")),
            width: value("width")?,
            depth: value("depth")?,
            params,
            non_embedding_params: value("non_embedding_params")?,
            tokens,
            loss,
            flops: if flops.is_nan() { 6.0 * params * tokens } else { flops },
        });
    }
    if rows.is_empty() {
        bail!("{file} has no rows{}", if options.filters.is_empty() { "" } else { " that pass the filters" });
    }
    Ok(rows)
}

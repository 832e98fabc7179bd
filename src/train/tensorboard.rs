//! TensorBoard event files beside `metrics.jsonl`, so that `tensorboard --logdir runs/`
//! shows every run's curves while it trains. The Rust crates that write them need `protoc`
//! at build time (or bring old protobuf and image stacks), so the three messages a scalar
//! needs are declared here with `prost`'s derive and framed as TFRecords (length, data,
//! each with a masked CRC-32C from the `crc` crate), as TensorFlow's `RecordWriter` does.
//!
//! Like `metrics.csv`, the file is rebuilt from `metrics.jsonl` at each start (which a
//! resume has cut back to the checkpoint's step), then appended to as lines are logged, so
//! a resumed run shows each step once.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use prost::Message;

use crate::durable::write_atomic;

/// The run's event file; TensorBoard reads any file whose name holds `tfevents`.
pub const EVENTS_FILE: &str = "events.out.tfevents.moegrad";

/// `tensorflow.Event`, with the two payloads moegrad writes.
#[derive(Clone, PartialEq, Message)]
pub struct Event {
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    #[prost(int64, tag = "2")]
    pub step: i64,
    #[prost(oneof = "What", tags = "3, 5")]
    pub what: Option<What>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum What {
    /// The first event of every file.
    #[prost(string, tag = "3")]
    FileVersion(String),
    #[prost(message, tag = "5")]
    Summary(Summary),
}

/// `tensorflow.Summary`: tagged values.
#[derive(Clone, PartialEq, Message)]
pub struct Summary {
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<SummaryValue>,
}

/// `tensorflow.Summary.Value` holding a scalar (`simple_value`).
#[derive(Clone, PartialEq, Message)]
pub struct SummaryValue {
    #[prost(string, tag = "1")]
    pub tag: String,
    #[prost(float, tag = "2")]
    pub simple_value: f32,
}

fn masked_crc(bytes: &[u8]) -> u32 {
    const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);
    let c = CRC32C.checksum(bytes);
    c.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// One TFRecord: the length and its CRC, the data and its CRC.
fn record(event: &Event) -> Vec<u8> {
    let data = event.encode_to_vec();
    let len = (data.len() as u64).to_le_bytes();
    [&len[..], &masked_crc(&len).to_le_bytes(), &data, &masked_crc(&data).to_le_bytes()].concat()
}

/// The events of a file's bytes, every CRC checked (what TensorBoard's reader does).
pub fn read_events(bytes: &[u8]) -> Result<Vec<Event>> {
    let mut events = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        if rest.len() < 12 {
            bail!("a record is cut short after {} events", events.len());
        }
        let (len, crc) = (&rest[..8], u32::from_le_bytes(rest[8..12].try_into().expect("4 bytes")));
        if masked_crc(len) != crc {
            bail!("record {}: its length fails its CRC", events.len());
        }
        let n = u64::from_le_bytes(len.try_into().expect("8 bytes")) as usize;
        if rest.len() < 16 + n {
            bail!("record {}: {n} bytes announced, {} left", events.len(), rest.len() - 16);
        }
        let data = &rest[12..12 + n];
        if masked_crc(data) != u32::from_le_bytes(rest[12 + n..16 + n].try_into().expect("4 bytes")) {
            bail!("record {}: its data fails its CRC", events.len());
        }
        events.push(Event::decode(data).with_context(|| format!("record {} is not an Event", events.len()))?);
        rest = &rest[16 + n..];
    }
    Ok(events)
}

/// The scalars of a `metrics.jsonl` line, by TensorBoard tag.
fn scalars(line: &serde_json::Value) -> Vec<SummaryValue> {
    const RUN: [(&str, &str); 9] = [
        ("train_loss", "loss/train"),
        ("eval_loss", "loss/eval"),
        ("lr", "optim/lr"),
        ("grad_norm", "optim/grad_norm"),
        ("loss_scale", "optim/loss_scale"),
        ("tokens_per_s", "speed/tokens_per_s"),
        ("mfu", "speed/mfu"),
        ("peak_memory_mib", "memory/peak_mib"),
        ("tokens", "data/tokens"),
    ];
    const LAYER: [&str; 6] = ["load_cv", "max_violation", "router_entropy", "aux_loss", "z_loss", "dropped"];
    let value = |tag: String, v: &serde_json::Value| v.as_f64().map(|x| SummaryValue { tag, simple_value: x as f32 });
    let mut out: Vec<SummaryValue> = RUN.iter().filter_map(|(key, tag)| value(tag.to_string(), &line[*key])).collect();
    for (i, layer) in line["moe"].as_array().into_iter().flatten().enumerate() {
        out.extend(LAYER.iter().filter_map(|key| value(format!("moe{i}/{key}"), &layer[*key])));
    }
    out
}

/// The event of a logged line; its time is the line's `time` (seconds since the epoch).
fn line_event(line: &serde_json::Value) -> Option<Event> {
    let step = line["step"].as_i64()?;
    let value = scalars(line);
    (!value.is_empty()).then(|| Event { wall_time: line["time"].as_f64().unwrap_or(0.0), step, what: Some(What::Summary(Summary { value })) })
}

/// The event file of a run being written.
pub struct EventFile {
    file: std::fs::File,
}

impl EventFile {
    /// Writes the run's event file anew from `metrics.jsonl` at `jsonl` (absent: none yet)
    /// and opens it for the lines to come.
    pub fn rebuild(out: &Path, jsonl: &Path) -> Result<EventFile> {
        let path = out.join(EVENTS_FILE);
        let text = match std::fs::read_to_string(jsonl) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", jsonl.display())),
        };
        let first = Event { wall_time: now(), step: 0, what: Some(What::FileVersion("brain.Event:2".into())) };
        let mut bytes = record(&first);
        for line in text.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()) {
            bytes.extend(line_event(&line).map(|e| record(&e)).unwrap_or_default());
        }
        write_atomic(&path, &bytes)?;
        let file = std::fs::OpenOptions::new().append(true).open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        Ok(EventFile { file })
    }

    /// Appends a logged line's scalars.
    pub fn append(&mut self, line: &serde_json::Value) -> Result<()> {
        if let Some(event) = line_event(line) {
            self.file.write_all(&record(&event)).context("cannot write the TensorBoard event file")?;
        }
        Ok(())
    }
}

/// Seconds since the Unix epoch, as the `time` of a logged line.
pub fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_masked_crc_is_tensorflow_s() {
        // The masked CRC-32C of the 8 length bytes of an empty record, as TensorBoard's
        // `record_writer.masked_crc32c(struct.pack("<Q", 0))` gives it.
        assert_eq!(masked_crc(&0u64.to_le_bytes()), 0x0798_0329);
    }

    #[test]
    fn records_read_back_and_damage_is_noticed() {
        let line = serde_json::json!({"step": 7, "train_loss": 2.5, "time": 1.0e9, "moe": [{"load_cv": 0.25}]});
        let event = line_event(&line).unwrap();
        let mut bytes = record(&event);
        assert_eq!(read_events(&bytes).unwrap(), vec![event]);
        bytes[14] ^= 1;
        assert!(read_events(&bytes).unwrap_err().to_string().contains("CRC"));
    }
}

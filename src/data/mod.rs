//! Research-scale data: token shards in llm.c's format (`shards`), a split's tokens in
//! memory or read from shards on disk (`tokens`), shard folders and their `meta.json` (`folder`), and
//! `moegrad data prepare`, which writes them from text on all cores (`prepare`).

pub mod fingerprint;
pub mod folder;
pub mod prepare;
pub mod shards;
pub mod tokens;

pub use folder::{is_shard_folder, ShardFolder, ShardMeta};
pub use prepare::{prepare, PrepareOptions, PrepareStart};
pub use tokens::Tokens;

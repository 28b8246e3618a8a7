//! The on-disk cache of compiled components, so that a restart loads a
//! plugin in milliseconds instead of compiling it again (seconds for a
//! Python or JavaScript component).
//!
//! An entry is keyed by the SHA-256 of the `.wasm` bytes and by the engine:
//! wasmtime's [`Engine::precompile_compatibility_hash`] (target, compiler
//! flags, tunables, wasm features and the full wasmtime version) plus the
//! wasmtime major version and this cache's format version. Entries of one
//! engine share a folder, `<cache_dir>/wasmtime-<major>-<engine hash>/`, so
//! folders of old engines can simply be deleted.
//!
//! The engine's folder is kept under `runtime.cache_max_size`: after each
//! write, the least recently used entries (by modification time, which a hit
//! refreshes) are removed until the rest fit. The entry just written always
//! stays, even alone over the limit. Other engines' folders are left alone:
//! another gateway version may share the root.
//!
//! `Component::deserialize` checks only that an artifact suits the engine, not
//! that it is the artifact of this `.wasm`, and it runs the machine code inside.
//! So an entry is trusted only when its header names the same key and the
//! SHA-256 of its contents matches the header; anything else (a truncated or
//! corrupt file, an entry of another component or engine, a file wasmtime
//! refuses) is logged, ignored, and overwritten by a fresh compile.
//!
//! Writes go to a temporary file in the same folder, are synced, and renamed
//! into place, so readers (other gateways sharing the folder) see a whole
//! entry or none. The folders are created private (mode 0700); the cache
//! folder must not be writable by anyone the gateway does not trust.

use std::hash::Hasher;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Engine, ModuleVersionStrategy};

/// Bumped whenever the entry layout changes.
const FORMAT: &str = "wasmgate compile cache v1";
/// The first bytes of every entry.
const MAGIC: &[u8; 16] = b"wasmgate-cwasm\0\x01";
/// Magic, key, artifact length, artifact SHA-256.
const HEADER_LEN: usize = 16 + 32 + 8 + 32;

/// How a component was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// There is no cache: compiled.
    Disabled,
    /// Loaded from a valid cache entry: not compiled.
    Hit,
    /// No entry: compiled (and written, unless writing failed).
    Miss,
    /// An entry existed but was corrupt, stale or refused: compiled and overwritten.
    Rejected,
    /// Another plugin entry already uses the same bytes: its compiled code
    /// is shared, neither compiled nor read again.
    Shared,
}

impl CacheOutcome {
    /// Its name in logs and metrics: `disabled`, `hit`, `miss`, `rejected`, `shared`.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheOutcome::Disabled => "disabled",
            CacheOutcome::Hit => "hit",
            CacheOutcome::Miss => "miss",
            CacheOutcome::Rejected => "rejected",
            CacheOutcome::Shared => "shared",
        }
    }
}

/// Counts since the cache was opened (shown in the status as
/// `compile_cache`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CacheStats {
    /// Components loaded from a valid entry.
    pub hits: u64,
    /// Components compiled because there was no entry.
    pub misses: u64,
    /// Entries found corrupt, stale or refused (compiled again and overwritten).
    pub rejected: u64,
    /// Entries that could not be written.
    pub write_errors: u64,
    /// Entries removed to stay under the size limit.
    pub evicted: u64,
}

/// The on-disk cache of compiled components (`[runtime] cache_dir`): the
/// folder of one engine's entries, `<cache_dir>/wasmtime-<major>-<engine
/// hash>/`, one `.cwasm` file per component, keyed by the SHA-256 of its
/// `.wasm` bytes, kept under `cache_max_size` by evicting the least recently
/// used. An entry is used only when its header and checksum match; anything
/// else is compiled again and overwritten. [`Runtime::cache`] hands it out.
///
/// [`Runtime::cache`]: crate::plugin::Runtime::cache
#[derive(Debug)]
pub struct CompileCache {
    dir: PathBuf,
    engine_key: [u8; 32],
    /// Bytes this engine's entries may take; 0 = no limit.
    max_size: u64,
    hits: AtomicU64,
    misses: AtomicU64,
    rejected: AtomicU64,
    write_errors: AtomicU64,
    evicted: AtomicU64,
}

/// Feeds `Hash` output into SHA-256, so the engine key is stable across
/// processes (unlike `DefaultHasher`, which promises nothing).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        unreachable!("only the digest of the hashed bytes is used")
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl CompileCache {
    /// Open (and create) the folder for `engine`'s entries under `root`,
    /// kept under `max_size` bytes (0 = no limit).
    pub(crate) fn open(
        root: &Path,
        engine: &Engine,
        max_size: u64,
    ) -> std::io::Result<CompileCache> {
        let major = ModuleVersionStrategy::WasmtimeVersion.as_str().to_string();
        let mut hasher = Sha256Hasher(Sha256::new());
        hasher.write(FORMAT.as_bytes());
        hasher.write(major.as_bytes());
        std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut hasher);
        let engine_key: [u8; 32] = hasher.0.finalize().into();
        let dir = root.join(format!("wasmtime-{major}-{}", &hex(&engine_key)[..16]));
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&dir)?;
        Ok(CompileCache {
            dir,
            engine_key,
            max_size,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
        })
    }

    /// This engine's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the entry for these `.wasm` bytes lives (whether or not it exists).
    pub fn entry_path(&self, wasm: &[u8]) -> PathBuf {
        self.path_for(&Sha256::digest(wasm).into())
    }

    /// Its counts since it was opened.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            write_errors: self.write_errors.load(Ordering::Relaxed),
            evicted: self.evicted.load(Ordering::Relaxed),
        }
    }

    fn path_for(&self, wasm_sha: &[u8; 32]) -> PathBuf {
        self.dir.join(format!("{}.cwasm", hex(wasm_sha)))
    }

    fn key(&self, wasm_sha: &[u8; 32]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(FORMAT.as_bytes());
        h.update(self.engine_key);
        h.update(wasm_sha);
        h.finalize().into()
    }

    /// The component for `wasm`: from a valid entry, or from `compile`,
    /// whose result is then written. Only `compile`'s error is returned:
    /// cache trouble is logged and costs a compile, nothing more.
    pub(crate) fn load_or_compile<E>(
        &self,
        engine: &Engine,
        wasm: &[u8],
        compile: impl FnOnce() -> Result<Component, E>,
    ) -> Result<(Component, CacheOutcome), E> {
        let wasm_sha: [u8; 32] = Sha256::digest(wasm).into();
        let path = self.path_for(&wasm_sha);
        let key = self.key(&wasm_sha);
        let outcome = match std::fs::read(&path) {
            Ok(entry) => match self.decode(engine, &key, &entry) {
                Ok(component) => {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    // Recently used: the last to be evicted.
                    let _ = std::fs::File::options()
                        .write(true)
                        .open(&path)
                        .and_then(|f| f.set_modified(SystemTime::now()));
                    return Ok((component, CacheOutcome::Hit));
                }
                Err(reason) => {
                    tracing::warn!(
                        path = %path.display(),
                        %reason,
                        "ignoring compile cache entry; compiling again"
                    );
                    self.rejected.fetch_add(1, Ordering::Relaxed);
                    CacheOutcome::Rejected
                }
            },
            Err(e) => {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), error = %e, "cannot read compile cache entry");
                }
                self.misses.fetch_add(1, Ordering::Relaxed);
                CacheOutcome::Miss
            }
        };
        let component = compile()?;
        match component.serialize() {
            Ok(artifact) => {
                if let Err(e) = self.write(&path, &key, &artifact) {
                    self.write_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(path = %path.display(), error = %e, "cannot write compile cache entry");
                } else {
                    self.evict(&path);
                }
            }
            Err(e) => {
                self.write_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "cannot serialize compiled component for the cache");
            }
        }
        Ok((component, outcome))
    }

    /// Check an entry completely before wasmtime sees it.
    fn decode(&self, engine: &Engine, key: &[u8; 32], entry: &[u8]) -> Result<Component, String> {
        if entry.len() < HEADER_LEN {
            return Err(format!("truncated: {} bytes", entry.len()));
        }
        let (header, artifact) = entry.split_at(HEADER_LEN);
        if &header[..16] != MAGIC {
            return Err("not a wasmgate cache entry (bad magic)".into());
        }
        if header[16..48] != key[..] {
            return Err("entry of another component, engine or format".into());
        }
        let len = u64::from_le_bytes(header[48..56].try_into().expect("8 bytes"));
        if len != artifact.len() as u64 {
            return Err(format!(
                "length mismatch: header says {len}, file holds {}",
                artifact.len()
            ));
        }
        let digest: [u8; 32] = Sha256::digest(artifact).into();
        if header[56..88] != digest[..] {
            return Err("checksum mismatch: contents corrupt".into());
        }
        // SAFETY: `Component::deserialize` trusts its input to be an artifact
        // that wasmtime produced. These bytes are exactly what `write` stored
        // for this key (this `.wasm` and a compatible engine): the header
        // matches and the SHA-256 of the contents equals the recorded one,
        // and the folder is private to the gateway's user. The one reviewed
        // unsafe block of the host.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(engine, artifact) };
        component.map_err(|e| format!("refused by wasmtime: {e:#}"))
    }

    /// Remove the least recently used entries until this engine's folder
    /// fits `max_size`, keeping `keep` (the entry just written). Trouble
    /// reading the folder or removing a file is logged, never fatal.
    fn evict(&self, keep: &Path) {
        if self.max_size == 0 {
            return;
        }
        let read = match std::fs::read_dir(&self.dir) {
            Ok(read) => read,
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot list the compile cache");
                return;
            }
        };
        let mut entries: Vec<(SystemTime, u64, PathBuf)> = read
            .filter_map(Result::ok)
            .filter(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.ends_with(".cwasm") && !name.starts_with(".tmp-")
            })
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                Some((meta.modified().ok()?, meta.len(), e.path()))
            })
            .collect();
        let mut total: u64 = entries.iter().map(|(_, len, _)| len).sum();
        if total <= self.max_size {
            return;
        }
        entries.sort();
        for (_, len, path) in entries {
            if total <= self.max_size {
                break;
            }
            if path == keep {
                continue;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    total -= len;
                    self.evicted.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(path = %path.display(), bytes = len, "compile cache over its size limit: evicted the least recently used entry");
                }
                // Another gateway sharing the folder may have removed it.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => total -= len,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot evict compile cache entry")
                }
            }
        }
    }

    /// Write an entry atomically: temp file, sync, rename.
    fn write(&self, path: &Path, key: &[u8; 32], artifact: &[u8]) -> std::io::Result<()> {
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .suffix(".cwasm")
            .tempfile_in(&self.dir)?;
        let digest: [u8; 32] = Sha256::digest(artifact).into();
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(key);
        header.extend_from_slice(&(artifact.len() as u64).to_le_bytes());
        header.extend_from_slice(&digest);
        tmp.write_all(&header)?;
        tmp.write_all(artifact)?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest component there is, compiled by the engine.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

    fn engine() -> Engine {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        Engine::new(&config).unwrap()
    }

    fn compile(engine: &Engine, wasm: &[u8]) -> Result<Component, wasmtime::Error> {
        Component::new(engine, wasm)
    }

    #[test]
    fn miss_then_hit_then_corrupt_is_rejected_and_rewritten() {
        let root = tempfile::tempdir().unwrap();
        let engine = engine();
        let cache = CompileCache::open(root.path(), &engine, 0).unwrap();
        let wasm = EMPTY_COMPONENT;
        let (_, first) = cache
            .load_or_compile(&engine, wasm, || compile(&engine, wasm))
            .unwrap();
        assert_eq!(first, CacheOutcome::Miss);
        let path = cache.entry_path(wasm);
        assert!(path.is_file(), "entry written at {}", path.display());

        let (_, second) = cache
            .load_or_compile(&engine, wasm, || -> Result<Component, String> {
                Err("a hit must not compile".into())
            })
            .unwrap();
        assert_eq!(second, CacheOutcome::Hit);

        // Flip one byte of the artifact: the checksum catches it.
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let (_, third) = cache
            .load_or_compile(&engine, wasm, || compile(&engine, wasm))
            .unwrap();
        assert_eq!(third, CacheOutcome::Rejected);
        let (_, fourth) = cache
            .load_or_compile(&engine, wasm, || compile(&engine, wasm))
            .unwrap();
        assert_eq!(fourth, CacheOutcome::Hit, "the bad entry was overwritten");
        assert_eq!(
            cache.stats(),
            CacheStats {
                hits: 2,
                misses: 1,
                rejected: 1,
                write_errors: 0,
                evicted: 0,
            }
        );
        // Only the entry is left: no temporary files.
        let files: Vec<_> = std::fs::read_dir(cache.dir()).unwrap().collect();
        assert_eq!(files.len(), 1);
    }

    #[test]
    fn truncated_and_foreign_entries_are_rejected() {
        let root = tempfile::tempdir().unwrap();
        let engine = engine();
        let cache = CompileCache::open(root.path(), &engine, 0).unwrap();
        let wasm = EMPTY_COMPONENT;
        cache
            .load_or_compile(&engine, wasm, || compile(&engine, wasm))
            .unwrap();
        let path = cache.entry_path(wasm);
        let good = std::fs::read(&path).unwrap();

        std::fs::write(&path, &good[..HEADER_LEN + 3]).unwrap();
        let (_, outcome) = cache
            .load_or_compile(&engine, wasm, || compile(&engine, wasm))
            .unwrap();
        assert_eq!(outcome, CacheOutcome::Rejected, "truncated");

        // A valid entry of another component under this component's name.
        let other: &[u8] = b"\0asm\x0d\0\x01\0\0\x02\x01a";
        Component::new(&engine, other).expect("the other component is valid");
        std::fs::write(&path, &good).unwrap();
        std::fs::rename(&path, cache.entry_path(other)).unwrap();
        let (_, outcome) = cache
            .load_or_compile(&engine, other, || compile(&engine, other))
            .unwrap();
        assert_eq!(outcome, CacheOutcome::Rejected, "foreign entry");
    }

    #[test]
    fn engines_with_other_settings_use_other_folders() {
        let root = tempfile::tempdir().unwrap();
        let a = CompileCache::open(root.path(), &engine(), 0).unwrap();
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        let b = CompileCache::open(root.path(), &Engine::new(&config).unwrap(), 0).unwrap();
        assert_ne!(a.dir(), b.dir());
        let again = CompileCache::open(root.path(), &engine(), 0).unwrap();
        assert_eq!(a.dir(), again.dir(), "the key is stable");
    }

    /// The empty component with a custom section named `name`: another
    /// `.wasm`, so another entry, of about the same size.
    fn named_component(name: &str) -> Vec<u8> {
        let mut wasm = EMPTY_COMPONENT.to_vec();
        wasm.extend_from_slice(&[0, name.len() as u8 + 1, name.len() as u8]);
        wasm.extend_from_slice(name.as_bytes());
        wasm
    }

    #[test]
    fn over_the_size_limit_the_least_recently_used_entries_go() {
        let root = tempfile::tempdir().unwrap();
        let engine = engine();
        let [a, b, c] = ["a", "b", "c"].map(named_component);
        let load = |cache: &CompileCache, wasm: &[u8]| {
            cache
                .load_or_compile(&engine, wasm, || compile(&engine, wasm))
                .unwrap()
                .1
        };
        // Measure one entry, then allow two and a half.
        let probe = CompileCache::open(root.path(), &engine, 0).unwrap();
        assert_eq!(load(&probe, &a), CacheOutcome::Miss);
        let one = std::fs::metadata(probe.entry_path(&a)).unwrap().len();
        let cache = CompileCache::open(root.path(), &engine, one * 5 / 2).unwrap();
        assert_eq!(load(&cache, &b), CacheOutcome::Miss);
        // Make the order certain: `a` written long ago, `b` a little later,
        // and then `a` used again (a hit refreshes it), so `b` is the
        // least recently used.
        let ago = |secs| SystemTime::now() - std::time::Duration::from_secs(secs);
        let touch = |wasm: &[u8], at| {
            std::fs::File::options()
                .write(true)
                .open(cache.entry_path(wasm))
                .unwrap()
                .set_modified(at)
                .unwrap()
        };
        touch(&a, ago(600));
        touch(&b, ago(300));
        assert_eq!(load(&cache, &a), CacheOutcome::Hit);
        assert_eq!(cache.stats().evicted, 0, "two entries fit");

        assert_eq!(load(&cache, &c), CacheOutcome::Miss);
        assert_eq!(cache.stats().evicted, 1);
        assert!(
            !cache.entry_path(&b).exists(),
            "b was the least recently used"
        );
        assert!(cache.entry_path(&a).exists() && cache.entry_path(&c).exists());
        assert_eq!(
            load(&cache, &b),
            CacheOutcome::Miss,
            "an evicted entry is compiled again"
        );

        // The entry just written stays even when it alone is over the limit.
        // (`b`, written last, is certain to be there; which of the older two
        // went when it came depends on the file system's timestamp
        // granularity.)
        let tiny = CompileCache::open(root.path(), &engine, 1).unwrap();
        assert_eq!(load(&tiny, &b), CacheOutcome::Hit);
        let d = named_component("d");
        assert_eq!(load(&tiny, &d), CacheOutcome::Miss);
        let left: Vec<_> = std::fs::read_dir(tiny.dir()).unwrap().collect();
        assert_eq!(left.len(), 1);
        assert!(tiny.entry_path(&d).exists());
    }
}

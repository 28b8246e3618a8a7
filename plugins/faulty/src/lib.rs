//! Test plugin that misbehaves on request, chosen by the payload:
//!
//! - `trap` panics (a trap in the host);
//! - `reject` and `retry` return those errors;
//! - `bad-publish` publishes to an invalid subject and reports the host's
//!   error as a rejection;
//! - `loop` never returns (the host's deadline must stop it);
//! - `alloc:<MiB>` allocates and touches that much memory, then replies
//!   `allocated <MiB> MiB`;
//! - `memory-bomb` allocates 1 MiB after 1 MiB until something stops it;
//! - `stack-overflow` recurses without end with big frames, which overflow
//!   the guest's own stack in linear memory (an out-of-bounds trap);
//! - `native-stack-overflow` recurses without end with frames that live on
//!   wasmtime's native stack only, until its `max_wasm_stack` stops it;
//! - `forbidden-publish` publishes to `secret.<subject>` and reports the
//!   host's error as a rejection (or `ok(none)` if the host allowed it);
//! - `forbidden-then-ok` publishes to `secret.<subject>`, ignores the error,
//!   publishes the payload to `<prefix>.<subject>` and replies with the
//!   error it got (as `{:?}`) — the allowed publish must go out, the
//!   forbidden one must not;
//! - `huge-publish:<bytes>` publishes that many bytes to `<prefix>.<subject>`
//!   and reports the host's error as a rejection;
//! - `huge-reply:<bytes>` replies with that many bytes;
//! - `publish-to:<subject> <payload>` publishes `<payload>` (possibly empty)
//!   to `<subject>` and replies `published`, or `refused: <error as {:?}>`
//!   (returning `ok` either way, so an allowed publish goes out);
//! - anything else is echoed to `<prefix>.<subject>` and replied.

wit_bindgen::generate!({ path: "../../wit", world: "plugin" });

use std::hint::black_box;

use exports::wasmgate::plugin::handler::Guest;
use wasmgate::plugin::types::{HandleError, Message};
use wasmgate::plugin::{config, publisher};

struct Faulty;

fn prefix() -> String {
    config::get("prefix").unwrap_or_else(|| "out".to_string())
}

fn number(arg: &str) -> Result<usize, HandleError> {
    arg.parse()
        .map_err(|_| HandleError::Reject(format!("{arg:?} is not a number")))
}

/// Touch every page so the memory is really there.
fn allocate(bytes: usize) -> Vec<u8> {
    let mut v = vec![0u8; bytes];
    for i in (0..bytes).step_by(4096) {
        v[i] = 1;
    }
    black_box(v)
}

#[inline(never)]
fn recurse(depth: u64) -> u64 {
    // Never true; it only tells the compiler the recursion could end.
    if black_box(depth) == u64::MAX {
        return 0;
    }
    let mut frame = [0u8; 512];
    frame[(depth % 512) as usize] = depth as u8;
    let frame = black_box(frame);
    recurse(black_box(depth + 1)).wrapping_add(frame[(depth % 7) as usize] as u64)
}

/// Scalars only: nothing of this frame goes to the stack in linear memory.
#[inline(never)]
fn descend(depth: u64) -> u64 {
    if black_box(depth) == u64::MAX {
        return 0;
    }
    descend(black_box(depth + 1)).wrapping_mul(black_box(depth) | 1)
}

impl Guest for Faulty {
    fn handle(msg: Message) -> Result<Option<Vec<u8>>, HandleError> {
        let payload = String::from_utf8_lossy(&msg.payload).into_owned();
        let (command, arg) = payload.split_once(':').unwrap_or((payload.as_str(), ""));
        match command {
            "trap" => panic!("asked to trap"),
            "reject" => Err(HandleError::Reject("asked to reject".into())),
            "retry" => Err(HandleError::Retry("asked to retry".into())),
            "bad-publish" => match publisher::publish("bad subject", b"x", &[]) {
                Ok(()) => Ok(None),
                Err(e) => Err(HandleError::Reject(format!("{e:?}"))),
            },
            "loop" => {
                let mut n = 0u64;
                loop {
                    n = black_box(n.wrapping_add(1));
                }
            }
            "alloc" => {
                let mib = number(arg)?;
                let v = allocate(mib << 20);
                Ok(Some(
                    format!("allocated {} MiB", v.len() >> 20).into_bytes(),
                ))
            }
            "memory-bomb" => {
                let mut hoard = Vec::new();
                loop {
                    hoard.push(allocate(1 << 20));
                    black_box(&hoard);
                }
            }
            "stack-overflow" => Ok(Some(recurse(0).to_string().into_bytes())),
            "native-stack-overflow" => Ok(Some(descend(0).to_string().into_bytes())),
            "forbidden-publish" => {
                match publisher::publish(&format!("secret.{}", msg.subject), b"leak", &[]) {
                    Ok(()) => Ok(None),
                    Err(e) => Err(HandleError::Reject(format!("{e:?}"))),
                }
            }
            "publish-to" => {
                let (subject, body) = arg.split_once(' ').unwrap_or((arg, ""));
                Ok(Some(match publisher::publish(subject, body.as_bytes(), &[]) {
                    Ok(()) => b"published".to_vec(),
                    Err(e) => format!("refused: {e:?}").into_bytes(),
                }))
            }
            "forbidden-then-ok" => {
                let refused = publisher::publish(&format!("secret.{}", msg.subject), b"leak", &[]);
                publisher::publish(&format!("{}.{}", prefix(), msg.subject), b"allowed", &[])
                    .map_err(|e| HandleError::Retry(format!("{e:?}")))?;
                Ok(Some(format!("{refused:?}").into_bytes()))
            }
            "huge-publish" => {
                let body = vec![b'x'; number(arg)?];
                match publisher::publish(&format!("{}.{}", prefix(), msg.subject), &body, &[]) {
                    Ok(()) => Ok(Some(b"published".to_vec())),
                    Err(e) => Err(HandleError::Reject(format!("{e:?}"))),
                }
            }
            "huge-reply" => Ok(Some(vec![b'x'; number(arg)?])),
            _ => {
                publisher::publish(&format!("{}.{}", prefix(), msg.subject), &msg.payload, &[])
                    .map_err(|e| HandleError::Retry(format!("{e:?}")))?;
                Ok(msg.reply_to.map(|_| msg.payload))
            }
        }
    }
}

export!(Faulty);

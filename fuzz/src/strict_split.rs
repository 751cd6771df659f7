//! The strict HTTP/1 framing checker on arbitrary client bytes.
//!
//! Never panics, never releases more than it was given, and is independent of how the
//! bytes arrive: fed whole, or in reads of arbitrary sizes (as `StrictIo` feeds it: the
//! unreleased rest plus each new read), it accepts or rejects alike and releases the
//! same number of bytes. Upgrade requests get no `101` here, so checking resumes after
//! each.

use porch_front::strict::{Checker, HeadLimits, Reject};

/// Feeds `input` in reads of the sizes `cuts` gives (the rest at once when they run out),
/// the way `StrictIo` does. Returns the bytes released and the rejection, if any.
fn feed(limits: HeadLimits, input: &[u8], cuts: &[u8]) -> (usize, Option<Reject>) {
    let mut checker = Checker::new(limits);
    let mut pending: Vec<u8> = Vec::new();
    let mut released = 0;
    let mut fed = 0;
    let mut cuts = cuts.iter();
    while fed < input.len() {
        let n = cuts.next().map_or(input.len(), |&c| c as usize + 1);
        let end = (fed + n).min(input.len());
        pending.extend_from_slice(&input[fed..end]);
        fed = end;
        loop {
            let (n, reject) = checker.advance(&pending);
            assert!(n <= pending.len(), "released {n} of {} bytes", pending.len());
            released += n;
            pending.drain(..n);
            if reject.is_some() {
                return (released, reject);
            }
            if !checker.awaiting_switch() {
                break;
            }
            // Every Upgrade request is answered without a `101`: what follows it is
            // checked as the next request.
            checker.decided(false);
        }
    }
    (released, None)
}

pub fn run(data: &[u8]) {
    // Header: small limits (so the 414 and 431 paths are reachable) and the read sizes.
    if data.len() < 4 {
        return;
    }
    let limits = HeadLimits {
        request_line: 8 + data[0] as usize,
        fields: 1 + (data[1] % 16) as usize,
        field_size: 4 + data[2] as usize,
    };
    let ncuts = (data[3] % 16) as usize;
    let rest = &data[4..];
    let (cuts, input) = rest.split_at(ncuts.min(rest.len()));

    let whole = feed(limits, input, &[]);
    let split = feed(limits, input, cuts);
    let bytewise = feed(limits, input, &vec![0; input.len()]);
    for (how, other) in [("in the reads given", split), ("one byte at a time", bytewise)] {
        // The verdict is whether and where the stream is cut off. Its status may differ
        // only for a line with two faults, where the one noticed first depends on how
        // much of the line had arrived (e.g. a bare CR in an over-long line).
        assert_eq!(
            (whole.0, whole.1.is_some()),
            (other.0, other.1.is_some()),
            "fed {how}, the verdict changed: {whole:?} whole vs {other:?}; \
             limits {limits:?}, input {:?}, cuts {cuts:?}",
            String::from_utf8_lossy(input),
        );
    }
}

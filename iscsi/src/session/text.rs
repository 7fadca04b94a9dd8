//! Text requests in full feature phase: SendTargets (discovery) and
//! renegotiation answers, with continuation over several PDUs when the
//! answer exceeds the initiator's MaxRecvDataSegmentLength.

use super::{Connection, Host, Phase};
use crate::pdu::{TextRequest, TextResponse, BHS_LEN, RESERVED_TAG};
use crate::text;

/// A text answer being sent in pieces.
#[derive(Debug)]
pub(super) struct Pending {
    itt: u32,
    ttt: u32,
    data: Vec<u8>,
    sent: usize,
}

impl Connection {
    pub(super) fn text_request(&mut self, req: &TextRequest, data: &[u8], host: &mut dyn Host) {
        let Phase::Full(s) = &mut self.phase else {
            return;
        };
        let mrdsl = s.params.max_recv_data_segment_length_initiator.max(512) as usize;
        // Continuation of an answer in progress.
        if req.ttt != RESERVED_TAG {
            match s.text.take() {
                Some(p) if p.ttt == req.ttt && p.itt == req.itt => {
                    self.send_text_piece(p, mrdsl);
                }
                _ => self.reject(0x09, &encode(req)),
            }
            return;
        }
        s.text = None;
        let pairs = match text::parse(data) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "malformed text request");
                self.reject(0x09, &encode(req));
                return;
            }
        };
        let discovery = s.params.is_discovery();
        let initiator = s.params.initiator_name.clone();
        let own_target = s.params.target_name.clone();
        let mut out = Vec::new();
        for (key, value) in &pairs {
            if key == "SendTargets" {
                let only = match value.as_str() {
                    // All targets in discovery sessions; only ours otherwise.
                    "All" if discovery => None,
                    "All" | "" => own_target.as_deref(),
                    name => Some(name),
                };
                if discovery || only.is_some() {
                    for (target, addrs) in host.send_targets(&initiator, only) {
                        text::push_pair(&mut out, "TargetName", &target);
                        for a in addrs {
                            text::push_pair(&mut out, "TargetAddress", &a);
                        }
                    }
                }
            } else {
                text::push_pair(&mut out, key, "NotUnderstood");
            }
        }
        let Phase::Full(s) = &mut self.phase else {
            return;
        };
        let ttt = if out.len() > mrdsl {
            s.alloc_ttt()
        } else {
            RESERVED_TAG
        };
        let p = Pending {
            itt: req.itt,
            ttt,
            data: out,
            sent: 0,
        };
        self.send_text_piece(p, mrdsl);
    }

    fn send_text_piece(&mut self, mut p: Pending, mrdsl: usize) {
        let chunk = mrdsl.min(p.data.len() - p.sent);
        let last = p.sent + chunk == p.data.len();
        let statsn = self.next_statsn();
        let Phase::Full(s) = &mut self.phase else {
            return;
        };
        let resp = TextResponse {
            final_bit: last,
            continue_: !last,
            total_ahs_len: 0,
            data_segment_len: chunk as u32,
            lun: 0,
            itt: p.itt,
            ttt: if last { RESERVED_TAG } else { p.ttt },
            statsn,
            exp_cmdsn: s.window.exp_cmdsn(),
            max_cmdsn: s.window.max_cmdsn(),
        };
        let mut bhs = [0u8; BHS_LEN];
        resp.encode(&mut bhs);
        let range = p.sent..p.sent + chunk;
        self.out.push(&bhs, &p.data[range]);
        p.sent += chunk;
        if !last {
            if let Phase::Full(s) = &mut self.phase {
                s.text = Some(p);
            }
        }
    }
}

fn encode(req: &TextRequest) -> [u8; BHS_LEN] {
    let mut bhs = [0u8; BHS_LEN];
    req.encode(&mut bhs);
    bhs
}

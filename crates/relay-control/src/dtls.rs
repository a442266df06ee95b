//! DTLS-SRTP in the SDP ([RFC 5763 §5](https://www.rfc-editor.org/rfc/rfc5763#section-5)):
//! `a=setup` ([RFC 4145](https://www.rfc-editor.org/rfc/rfc4145)) decides who sends the
//! ClientHello, `a=fingerprint` ([RFC 8122](https://www.rfc-editor.org/rfc/rfc8122)) whose
//! certificate is expected. The relay terminates DTLS on a leg it converts to plain RTP or SDES,
//! with its own certificate (`anchorage_relay::dtls`); DTLS on both sides with no conversion
//! asked for is passed through untouched, fingerprints end to end.
//!
//! The relay's role, as rtpengine takes it:
//!
//! | the party wrote | the relay answers | the relay is |
//! | --- | --- | --- |
//! | `actpass` (offer) | `active` (`passive` with `DTLS=passive`) | client (server) |
//! | `active` | `passive` | server |
//! | `passive` | `active` | client |
//!
//! When the relay offers DTLS it writes `actpass` (`active`/`passive` with `DTLS=active`/
//! `passive`) and takes the role the answer leaves it. A move to this relay (ng `answer` with
//! `reanchor`) offers DTLS to both parties afresh, the offerer included: `actpass` to each, the
//! stored SDPs' `a=setup` ignored, each role taken from that party's real answer. A party's role is *settled* once it has the
//! relay's `a=setup` in an answer (or answered the relay's offer): until then the relay only
//! waits for a ClientHello, so it never sends one to a party that does not yet know it is the
//! server.

use anchorage_ng::Dtls as DtlsOption;
use anchorage_relay::{DtlsParams, DtlsRole, Fingerprint};
use anchorage_sdp::{MediaSection, Session};

/// An `a=setup` value (RFC 4145 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    /// `actpass`: either role (offers).
    ActPass,
    /// `active`: sends the ClientHello.
    Active,
    /// `passive`: waits for it.
    Passive,
}

impl Setup {
    /// The value as written.
    pub fn as_str(self) -> &'static str {
        match self {
            Setup::ActPass => "actpass",
            Setup::Active => "active",
            Setup::Passive => "passive",
        }
    }

    /// A party's `a=setup`: absent means `active` (RFC 4145 §4); `holdconn` and unknown
    /// values are refused.
    fn of(sdp: &Session, section: &MediaSection) -> Result<Setup, String> {
        let Some(value) = values(sdp, section, "setup").into_iter().next() else {
            return Ok(Setup::Active);
        };
        let value = value.trim();
        match value.to_ascii_lowercase().as_str() {
            "actpass" => Ok(Setup::ActPass),
            "active" => Ok(Setup::Active),
            "passive" => Ok(Setup::Passive),
            _ => Err(format!("a=setup:{value} is not supported")),
        }
    }
}

/// The DTLS state of one side of a stream, when the relay terminates DTLS there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DtlsParty {
    /// The party's certificate fingerprint, from its last SDP.
    pub peer: Option<Fingerprint>,
    /// The relay's role towards the party, once decided.
    pub role: Option<DtlsRole>,
    /// What the relay writes into `a=setup` towards the party.
    pub setup_out: Option<Setup>,
    /// The party knows the relay's role (see the module documentation).
    pub settled: bool,
    /// The relay's offer is a move's re-offer to the party that had offered: an `actpass`
    /// answer to it is taken as the offer it repeats (the relay is the client). baresip (to
    /// 1.0.0 at least) writes the `a=setup` of its first SDP into every later one, so as a
    /// caller it answers a re-INVITE `actpass`.
    pub reoffered: bool,
}

impl DtlsParty {
    /// The party offered DTLS: its fingerprint and setup; the relay takes the other role.
    pub fn offered_by_party(
        &mut self,
        sdp: &Session,
        section: &MediaSection,
        option: Option<DtlsOption>,
    ) -> Result<(), String> {
        let peer = fingerprint(sdp, section)?;
        let role = match Setup::of(sdp, section)? {
            Setup::ActPass if option == Some(DtlsOption::Passive) => DtlsRole::Server,
            Setup::ActPass | Setup::Passive => DtlsRole::Client,
            Setup::Active => DtlsRole::Server,
        };
        // The same party and role again (a re-offer that changes nothing) keeps the handshake.
        let unchanged = self.peer == Some(peer) && self.role == Some(role);
        self.peer = Some(peer);
        self.role = Some(role);
        self.setup_out = Some(match role {
            DtlsRole::Client => Setup::Active,
            DtlsRole::Server => Setup::Passive,
        });
        self.settled = unchanged && self.settled;
        self.reoffered = false;
        Ok(())
    }

    /// The relay offers DTLS to the party: `actpass`, or the role `DTLS=` asks for. The
    /// party's fingerprint and the role of a running handshake stay until its answer.
    pub fn offer_to_party(&mut self, option: Option<DtlsOption>) {
        self.setup_out = Some(match option {
            Some(DtlsOption::Active) => Setup::Active,
            Some(DtlsOption::Passive) => Setup::Passive,
            _ => Setup::ActPass,
        });
    }

    /// A move re-offers DTLS to the party whose SDP was the offer (the `answer` has
    /// `reanchor`): `actpass`, or the role `DTLS=` asks for; the party's fingerprint stays, and
    /// the relay's role waits for the party's answer (until then it only waits for a
    /// ClientHello, which an `active` party sends at once).
    pub fn reoffer_to_party(&mut self, option: Option<DtlsOption>) {
        self.offer_to_party(option);
        self.role = None;
        self.settled = false;
        self.reoffered = true;
    }

    /// A move replays the party's last SDP as the answer to the relay's offer (`reanchor`):
    /// its fingerprint is expected, but its `a=setup` answered another relay's offer (or was
    /// an offer itself), so the relay's role waits for the party's real answer.
    pub fn replayed_by_party(
        &mut self,
        sdp: &Session,
        section: &MediaSection,
    ) -> Result<(), String> {
        self.peer = Some(fingerprint(sdp, section)?);
        self.role = None;
        self.settled = false;
        Ok(())
    }

    /// The party answered the relay's DTLS offer.
    pub fn answered_by_party(
        &mut self,
        sdp: &Session,
        section: &MediaSection,
    ) -> Result<(), String> {
        let peer = fingerprint(sdp, section)?;
        let theirs = Setup::of(sdp, section)?;
        let role = match (self.setup_out, theirs) {
            (Some(Setup::Active), _) => DtlsRole::Client,
            (Some(Setup::Passive), _) => DtlsRole::Server,
            (_, Setup::Active) => DtlsRole::Server,
            (_, Setup::Passive) => DtlsRole::Client,
            (_, Setup::ActPass) if self.reoffered => DtlsRole::Client,
            (_, Setup::ActPass) => {
                return Err("a=setup:actpass in an answer (RFC 5763 §5)".into());
            }
        };
        self.peer = Some(peer);
        self.role = Some(role);
        self.settled = true;
        self.reoffered = false;
        Ok(())
    }

    /// The relay's answer, with its `a=setup`, goes to the party.
    pub fn settle(&mut self) {
        self.settled = self.role.is_some();
    }

    /// Forgets everything (the side is not DTLS any more).
    pub fn clear(&mut self) {
        *self = DtlsParty::default();
    }

    /// What the data plane runs: the settled role, else waiting as the server.
    pub fn params(&self) -> DtlsParams {
        DtlsParams {
            role: match (self.settled, self.role) {
                (true, Some(role)) => role,
                _ => DtlsRole::Server,
            },
            peer: self.peer,
        }
    }
}

/// The values of attribute `name` of a media section, else of the session level (RFC 5763
/// §5 allows both for `a=fingerprint` and `a=setup`).
fn values<'s>(sdp: &'s Session, section: &'s MediaSection, name: &'s str) -> Vec<&'s str> {
    let of = |level: &'s anchorage_sdp::Section| -> Vec<&'s str> {
        level
            .attributes_named(name)
            .filter_map(|a| a.value_str().ok())
            .collect()
    };
    let media = of(section.section());
    if media.is_empty() {
        of(sdp.session_level())
    } else {
        media
    }
}

/// The party's `a=fingerprint`: the first SHA-256 one of its media section, else of its
/// session level.
fn fingerprint(sdp: &Session, section: &MediaSection) -> Result<Fingerprint, String> {
    let values = values(sdp, section, "fingerprint");
    if values.is_empty() {
        return Err("no a=fingerprint".into());
    }
    values
        .iter()
        .find_map(|v| Fingerprint::parse(v))
        .ok_or_else(|| {
            format!(
                "a=fingerprint:{} is not supported (this relay checks sha-256 fingerprints)",
                values.first().copied().unwrap_or_default()
            )
        })
}

//! Network-management classification (sign-on, sign-off, echo) and response codes.
//!
//! 1987 links carry the code in DE70 (001 sign-on, 002 sign-off, 301 echo); 1993 and
//! 2003 links use DE24 (801, 802, 831). Codes vary between networks, so both the
//! field and the codes are configured per bank.

use serde::{Deserialize, Serialize};

use super::error::DecodeError;
use super::message::Message;

/// Which field and which codes mean sign-on, sign-off and echo for a bank.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetMgmtCodes {
    /// The field holding the network-management code (70 for 1987, 24 for 1993).
    pub field: u8,
    /// Sign-on codes.
    pub sign_on: Vec<String>,
    /// Sign-off codes.
    pub sign_off: Vec<String>,
    /// Echo-test codes.
    pub echo: Vec<String>,
}

impl Default for NetMgmtCodes {
    fn default() -> Self {
        Self {
            field: 70,
            sign_on: vec!["001".into()],
            sign_off: vec!["002".into()],
            echo: vec!["301".into()],
        }
    }
}

/// What a network-management message does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetMgmt {
    /// Sign-on (logon).
    SignOn,
    /// Sign-off (logoff).
    SignOff,
    /// Echo test.
    Echo,
    /// Another code (key exchange, cut-over, …), kept as written.
    Other(String),
    /// Network management without the code field.
    NoCode,
}

impl NetMgmtCodes {
    /// Classifies a class-8 message; `None` for any other class.
    pub fn classify(&self, msg: &Message<'_>) -> Option<Result<NetMgmt, DecodeError>> {
        if !msg.mti().is_network_management() {
            return None;
        }
        let Some(value) = msg.value(self.field) else { return Some(Ok(NetMgmt::NoCode)) };
        Some(value.map(|code| {
            if self.sign_on.contains(&code) {
                NetMgmt::SignOn
            } else if self.sign_off.contains(&code) {
                NetMgmt::SignOff
            } else if self.echo.contains(&code) {
                NetMgmt::Echo
            } else {
                NetMgmt::Other(code)
            }
        }))
    }
}

/// A response code (DE39) as its raw characters: `00`, `91`, `N7`; three digits on
/// 1993 links. Never a number: alphanumeric codes exist.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ResponseCode(pub String);

impl ResponseCode {
    /// The code as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the code is an approval (`00`, or `000` on 1993 links).
    pub fn is_approval(&self) -> bool {
        self.0.bytes().all(|b| b == b'0')
    }
}

impl Message<'_> {
    /// The response code (DE39), if present.
    pub fn response_code(&self) -> Option<Result<ResponseCode, DecodeError>> {
        self.value(39).map(|v| v.map(ResponseCode))
    }
}

//! Sending the preference center's mail (sign-in links, double opt-in confirmations): through
//! SMTP with lettre when a mail server is configured, into the log in demo mode, or into memory
//! for tests. Sending happens off the request, so how long it takes tells nothing about
//! whether an address is known.

use crate::config::{Config, SmtpTls};
use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::fmt;
use std::sync::{Arc, Mutex};

/// One message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub text: String,
}

/// Where mail goes.
#[derive(Clone)]
pub enum Mailer {
    Smtp {
        transport: AsyncSmtpTransport<Tokio1Executor>,
        from: Mailbox,
    },
    /// Demo mode without a mail server: the link is written to the log.
    Log,
    /// Kept in memory, for tests.
    Memory(Arc<Mutex<Vec<Mail>>>),
    /// No mail server: sign-in by email is unavailable.
    Disabled,
}

impl fmt::Debug for Mailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mailer::Smtp { from, .. } => write!(f, "Mailer::Smtp(from {from})"),
            Mailer::Log => f.write_str("Mailer::Log"),
            Mailer::Memory(_) => f.write_str("Mailer::Memory"),
            Mailer::Disabled => f.write_str("Mailer::Disabled"),
        }
    }
}

/// A mail configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("invalid mail settings: {0}")]
    Config(String),
    #[error("cannot build the message: {0}")]
    Message(String),
    #[error("the mail server refused or failed: {0}")]
    Send(String),
}

impl MailError {
    pub fn code(&self) -> &'static str {
        match self {
            MailError::Config(_) => "mail.config",
            MailError::Message(_) => "mail.message",
            MailError::Send(_) => "mail.send",
        }
    }
}

impl Mailer {
    /// The mailer a configuration asks for.
    pub fn from_config(config: &Config, organisation: &str) -> Result<Mailer, MailError> {
        let Some(host) = &config.smtp_host else {
            return Ok(if config.demo {
                Mailer::Log
            } else {
                Mailer::Disabled
            });
        };
        let from_text = config
            .smtp_from
            .clone()
            .unwrap_or_else(|| format!("{organisation} <no-reply@{host}>"));
        let from: Mailbox = from_text
            .parse()
            .map_err(|e| MailError::Config(format!("`smtp_from` `{from_text}`: {e}")))?;
        let builder = match config.smtp_tls {
            SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
                .port(config.smtp_port.unwrap_or(25)),
            SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host)
                .map_err(|e| MailError::Config(e.to_string()))?
                .port(config.smtp_port.unwrap_or(587)),
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host)
                .map_err(|e| MailError::Config(e.to_string()))?
                .port(config.smtp_port.unwrap_or(465)),
        };
        let builder = match (&config.smtp_user, &config.smtp_password) {
            (Some(user), Some(password)) => {
                builder.credentials(Credentials::new(user.clone(), password.expose().to_owned()))
            }
            _ => builder,
        };
        Ok(Mailer::Smtp {
            transport: builder.build(),
            from,
        })
    }

    /// A mailer that keeps what it sends, and the list it keeps it in.
    pub fn memory() -> (Mailer, Arc<Mutex<Vec<Mail>>>) {
        let sent = Arc::new(Mutex::new(Vec::new()));
        (Mailer::Memory(sent.clone()), sent)
    }

    pub fn can_send(&self) -> bool {
        !matches!(self, Mailer::Disabled)
    }

    /// Sends `mail`. `link` is what the log shows in demo mode (the link itself).
    pub async fn send(&self, mail: Mail, link: &str) -> Result<(), MailError> {
        match self {
            Mailer::Smtp { transport, from } => {
                let to: Mailbox = mail
                    .to
                    .parse()
                    .map_err(|e| MailError::Message(format!("recipient: {e}")))?;
                let message = Message::builder()
                    .from(from.clone())
                    .to(to)
                    .subject(mail.subject)
                    .header(ContentType::TEXT_PLAIN)
                    .body(mail.text)
                    .map_err(|e| MailError::Message(e.to_string()))?;
                transport
                    .send(message)
                    .await
                    .map(|_| ())
                    .map_err(|e| MailError::Send(e.to_string()))
            }
            Mailer::Log => {
                // Only in demo mode: the link opens demo data, and the tour needs it.
                tracing::info!(subject = %mail.subject, "preference center mail (demo, not sent): {link}");
                Ok(())
            }
            Mailer::Memory(sent) => {
                if let Ok(mut sent) = sent.lock() {
                    sent.push(mail);
                }
                Ok(())
            }
            Mailer::Disabled => Ok(()),
        }
    }
}

//! The relay as the client's response body: each poll hands on the next whole unit, then
//! the error event of a cut stream; dropping it early counts the answer as cancelled.

use super::*;

impl http_body::Body for Relay {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        while let Some(first) = this.primed.pop_front() {
            let out = this.visible(first);
            let all_read = this.upstream_done || this.upstream.is_end_stream();
            if this.primed.is_empty() && all_read && this.ended_cleanly() && this.buf.is_empty() {
                this.end(None);
            }
            if let Some(b) = out.filter(|b| !b.is_empty()) {
                return Poll::Ready(Some(Ok(Frame::data(b))));
            }
        }
        if this.done {
            return Poll::Ready(None);
        }
        let step = loop {
            match this.poll_step(cx) {
                Poll::Ready(Step::Unit(b)) => match this.visible(b) {
                    Some(b) => break Poll::Ready(Step::Unit(b)),
                    None => continue,
                },
                other => break other,
            }
        };
        match step {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Step::Unit(b)) => {
                // With a known length hyper stops polling once it has written it: finish
                // now rather than be dropped and mistaken for a client that left.
                if this.format == Format::Passthrough && this.upstream.is_end_stream() {
                    this.end(None);
                }
                Poll::Ready(Some(Ok(Frame::data(b))))
            }
            Poll::Ready(Step::End) => {
                this.end(None);
                Poll::Ready(None)
            }
            Poll::Ready(Step::Cut(reason)) if this.format == Format::Passthrough => {
                // A non-stream answer has no error event: break the body visibly.
                tracing::warn!(%reason, "upstream answer cut after it was committed");
                this.end(Some(reason.clone()));
                Poll::Ready(Some(Err(reason.into())))
            }
            Poll::Ready(Step::Cut(reason)) => {
                tracing::warn!(%reason, "upstream stream cut after the first byte");
                let tail = this.error_tail(&reason);
                this.end(Some(reason));
                Poll::Ready(Some(Ok(Frame::data(tail))))
            }
            Poll::Ready(Step::Failed(e)) => {
                this.end(Some(e.to_string()));
                Poll::Ready(Some(Err(e)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.is_done()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        Relay::size_hint(self)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        // Everything the upstream had was delivered: a finished answer, not a cancel.
        let delivered =
            self.upstream.is_end_stream() && self.buf.is_empty() && self.primed.is_empty();
        if !self.done && !delivered {
            self.finish.cancelled = true;
        }
        self.run_hooks();
    }
}

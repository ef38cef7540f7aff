//! Where the next request goes among one host's HTTP/2 connections: a pure function of
//! what each connection can take, so the rules are tested without a network.

/// What the pool needs to know of a connection to place a request.
#[derive(Debug, Clone, Copy)]
pub struct View {
    /// Takes new requests.
    pub open: bool,
    pub in_flight: usize,
    pub limit: usize,
    /// Its server's SETTINGS have arrived (else `limit` is 1 for now).
    pub settled: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    Use(usize),
    Open,
    Wait,
}

/// Where the next request goes: the first open connection with a free stream; else a new
/// connection when the waiting requests outnumber the room expected on those being opened
/// or not yet settled (`hint` streams each) and the cap allows; else wait.
pub fn next(views: &[View], connecting: usize, waiting: usize, hint: usize, cap: usize) -> Next {
    if let Some(i) = views.iter().position(|v| v.open && v.in_flight < v.limit) {
        return Next::Use(i);
    }
    let hint = hint.max(1);
    let unsettled: usize = views
        .iter()
        .filter(|v| v.open && !v.settled)
        .map(|v| hint.saturating_sub(v.in_flight))
        .sum();
    let open = views.iter().filter(|v| v.open).count();
    if waiting > connecting * hint + unsettled && open + connecting < cap {
        Next::Open
    } else {
        Next::Wait
    }
}

#[cfg(test)]
mod tests {
    use super::{Next, View, next};

    fn v(open: bool, in_flight: usize, limit: usize) -> View {
        View {
            open,
            in_flight,
            limit,
            settled: true,
        }
    }

    #[test]
    fn a_request_goes_to_the_first_open_connection_with_a_free_stream() {
        let views = [v(true, 4, 4), v(false, 0, 4), v(true, 3, 4)];
        assert_eq!(next(&views, 0, 1, 4, 8), Next::Use(2));
    }

    #[test]
    fn a_connection_is_opened_when_all_are_full_and_none_being_opened_has_room() {
        let full = [v(true, 4, 4), v(true, 4, 4)];
        assert_eq!(next(&full, 0, 1, 4, 8), Next::Open);
        // One is being opened, with room for four: the fifth waiting request opens another.
        assert_eq!(next(&full, 1, 4, 4, 8), Next::Wait);
        assert_eq!(next(&full, 1, 5, 4, 8), Next::Open);
        // At the cap, requests wait; connections going away do not count against it.
        assert_eq!(next(&full, 0, 9, 4, 2), Next::Wait);
        let going = [v(false, 4, 4), v(true, 4, 4)];
        assert_eq!(next(&going, 0, 1, 4, 2), Next::Open);
    }

    #[test]
    fn a_connection_whose_settings_are_not_yet_known_takes_one_stream_and_is_waited_for() {
        let unsettled = View {
            settled: false,
            ..v(true, 1, 1)
        };
        // Its one stream is taken; the next requests wait for its SETTINGS, expecting
        // room for `hint` streams there, and open another only past that.
        assert_eq!(next(&[unsettled], 0, 99, 100, 8), Next::Wait);
        assert_eq!(next(&[unsettled], 0, 100, 100, 8), Next::Open);
        let fresh = View {
            in_flight: 0,
            ..unsettled
        };
        assert_eq!(next(&[fresh], 0, 1, 100, 8), Next::Use(0));
    }
}

"""The one owner of Mailgate's durable state (see ``service.ledger.core``)."""

from service.ledger.audit import Event as Event
from service.ledger.audit import Verification as Verification
from service.ledger.core import Ledger as Ledger
from service.ledger.core import Listing as Listing
from service.ledger.core import Record as Record
from service.ledger.core import Round as Round
from service.ledger.core import with_seal as with_seal
from service.ledger.index import Chain as Chain

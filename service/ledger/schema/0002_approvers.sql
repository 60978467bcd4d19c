-- A request may have several approvers (and their delegates): a listing by approver looks here.
-- requests.approver stays the first approver, as before.
CREATE TABLE mailgate.request_approvers (
  request_id TEXT NOT NULL,
  approver   TEXT NOT NULL,
  PRIMARY KEY (request_id, approver)
);
CREATE INDEX request_approvers_approver ON mailgate.request_approvers (approver, request_id);
INSERT INTO mailgate.request_approvers (request_id, approver)
  SELECT request_id, approver FROM mailgate.requests;

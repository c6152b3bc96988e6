//! `DynamoReserver`: reservations in a DynamoDB table, shared across Salt masters.

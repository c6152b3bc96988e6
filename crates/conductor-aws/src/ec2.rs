//! `Ec2Backend`: the `CloudBackend` on aws-sdk-ec2.

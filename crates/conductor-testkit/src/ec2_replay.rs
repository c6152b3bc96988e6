//! A local HTTP endpoint that answers EC2 DescribeInstances with generated pages (filled by the AWS backend work).

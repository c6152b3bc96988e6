"""Helpers of scripts/demo: seed moto with the two existing instances, and
print the instances with their conductor grains (tags), checking uniqueness."""
import collections
import json
import sys

import boto3

ec2 = boto3.client("ec2", region_name="us-east-1")
GRAINS = ["cpid", "cloud.nifi.cluster.id", "devops.nifi.cluster.id", "cloud.system.id", "devops.system.id"]


def image():
    return ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]


def seed(pillar_in, pillar_out, front=None):
    """Creates a subnet in us-east-1a, the two existing instances, and a copy
    of the example pillar that uses the subnet. With `front` (the host:port
    of an AwsFront), the pillar is for Salt's real EC2 driver: its provider
    reaches moto through the front with a key pair, the profile has
    `deploy: False` (no SSH targets here), and no hooks or startup states
    (no master)."""
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24", AvailabilityZone="us-east-1a")["Subnet"]["SubnetId"]
    with open(pillar_in) as f:
        text = f.read().replace("subnet_id: subnet-1", "subnet_id: " + subnet)
    if front:
        ec2.create_key_pair(KeyName="conductor-demo")
        text = (text
                .replace("ssh_interface: private_ips,",
                         "ssh_interface: private_ips, endpoint: '%s', id: testing, key: testing, keyname: conductor-demo," % front)
                .replace("image: ami-0abc", "image: " + image())
                .replace("        startup_states: [devops.conductor]\n", "        deploy: False\n")
                .replace("      hooks: {pre_create: [orch.conductor_common], post_create: [orch.conductor_common]}\n", ""))
    with open(pillar_out, "w") as f:
        f.write(text)
    print("subnet:", subnet)
    for name in ["devops-mq01.us-east-1a.test.foobar.com", "devops-mq02.us-east-1a.test.foobar.com"]:
        ec2.run_instances(ImageId=image(), MinCount=1, MaxCount=1, InstanceType="t3.small",
                          Placement={"AvailabilityZone": "us-east-1a"},
                          TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": name}]}])
        print("existing:", name)


def moto_rows():
    """(name, grains) of every live instance, grains from its conductor:* tags."""
    rows = []
    for page in ec2.get_paginator("describe_instances").paginate():
        for r in page["Reservations"]:
            for i in r["Instances"]:
                if i["State"]["Name"] == "terminated":
                    continue
                tags = {t["Key"]: t["Value"] for t in i.get("Tags", [])}
                rows.append((tags.get("Name", i["InstanceId"]), [tags.get("conductor:" + g, "-") for g in GRAINS]))
    return rows


def salt_rows(path):
    """(name, grains) of every minion in `salt '*' grains.item ... --out=json` output."""
    with open(path) as f:
        answers = json.load(f)
    return [(name, [str(g.get(k, "")) or "-" for k in GRAINS]) for name, g in answers.items()]


def table(source=None):
    """Prints the grains table (from moto's tags, or from a Salt master's
    grains.item JSON) and checks that names and cluster ids are unique."""
    rows = salt_rows(source) if source else moto_rows()
    rows.sort()
    width = max(len(n) for n, _ in rows)
    cols = [max([len(g)] + [len(v[i]) for _, v in rows]) for i, g in enumerate(GRAINS)]
    print(f"{'minion':{width}}  " + "  ".join(f"{g:>{w}}" for g, w in zip(GRAINS, cols)))
    for name, vals in rows:
        print(f"{name:{width}}  " + "  ".join(f"{v:>{w}}" for v, w in zip(vals, cols)))
    names = collections.Counter(n for n, _ in rows)
    dups = [n for n, c in names.items() if c > 1]
    clusters = collections.defaultdict(set)
    for name, vals in rows:
        if vals[2] != "-":
            clusters[vals[2]].add(vals[0])
    shared = {k: v for k, v in clusters.items() if len(v) > 1}
    kind = "minions" if source else "instances"
    print(f"\n{len(rows)} {kind}, {len(names)} distinct names, "
          f"{len(clusters)} nifi clusters ({', '.join('clid-' + k for k in sorted(clusters))})")
    if dups or shared:
        sys.exit(f"duplicates: names {dups}, cluster ids shared across runs {shared}")


if __name__ == "__main__":
    {"seed": seed, "table": table}[sys.argv[1]](*sys.argv[2:])

# The devops example of DESIGN section 8: one group, an activemq role,
# a nifi cluster role and the small_test system.
conductor:
  environments:
    test: {domain: foobar.com, regions: [us-east-1, us-west-2]}
  groups:
    devops:
      provider: {size: t3.small, ssh_interface: private_ips, subnet_id: subnet-1}
      profile:
        image: ami-0abc
        script_args: -P stable 3007
        minion: {master: salt.foobar.com}
        startup_states: [devops.conductor]
      hooks: {pre_create: [orch.conductor_common], post_create: [orch.conductor_common]}
      roles:
        activemq: {basename: devops-mqXX.REGION.ENV, nodes: 2, size: t3.medium}
        nifi:
          cluster:
            nifi: {basename: devops-nifi-XX.REGION.ENV, nodes: 2}
            nifigr: {basename: devops-nifigr-XX.REGION.ENV, nodes: 1}
            nifi-dummy: {basename: devops-nifi-dummy-XX.REGION.ENV, nodes: 1}
      systems:
        small_test: [{role: nifi}, {role: activemq, count: 2}]
